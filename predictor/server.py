"""KServe's `ModelServer`, hardened: a bind address, a body-size cap, status codes for
overload and deadlines, no internals in error bodies, a read-only model repository,
defensive v2 binary decoding, and a draining shutdown. It also serves what KServe's flags
ask for but its servers leave out (TLS on gRPC and the gRPC message limits, in `grpc_server`), gRPC reflection,
and Triton's model configuration and statistics extensions.

Only the pieces KServe hard-codes are overridden; routing, protocols and the
preprocess -> predict -> postprocess pipeline are KServe's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from kserve import ModelServer
from kserve.errors import InvalidInput
from kserve.model_server import FASTAPI_APP_IMPORT_STRING
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer, _RefreshingServer
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from prometheus_client import exposition
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics, triton, v2_binary
from .errors import PredictorError, RepositoryDisabled
from .flags import FlagConfig, flag
from .grpc_server import GRPCInferenceServer, GrpcMessageLimits
from .limits import RequestLimits
from .sockets import bind_reuse_port, check_port_free
from .tls import TLSConfig

logger = logging.getLogger(__name__)


class ReadOnlyRepository(ModelRepositoryExtension):
    async def load(self, model_name: str) -> None:
        raise RepositoryDisabled()

    async def unload(self, model_name: str) -> None:
        raise RepositoryDisabled()


class PredictorDataPlane(DataPlane):
    def decode_inference_request(self, body: Any, headers: dict[str, str] | None, model_name: str) -> Any:
        if isinstance(body, bytes):
            lowered = {k.lower(): v for k, v in (headers or {}).items()}
            if v2_binary.HEADER in lowered:
                return v2_binary.parse(body, lowered, model_name)
            # FastAPI hands over raw bytes for any content type but JSON's; without the binary
            # extension's header the body is JSON whatever it is labelled (`curl -d` says form).
            body = json_inference_request(body)
        return super().decode_inference_request(body, headers, model_name)


def json_inference_request(body: bytes) -> InferenceRequest:
    """A v2 JSON body, validated by KServe's own request model, as FastAPI would for application/json."""
    try:
        return InferenceRequest.model_validate_json(body)
    except ValidationError as e:
        errors = e.errors()
        if any(err["type"] == "json_invalid" for err in errors):
            raise InvalidInput(
                f"v2 request body must be JSON, or binary with the '{v2_binary.HEADER}' header: "
                + describe_validation_errors(errors)
            ) from e
        # The same words as for a body labelled application/json (`_validation_error`).
        raise InvalidInput("invalid request: " + describe_validation_errors(errors)) from e


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """The first few problems of a pydantic or FastAPI validation, each with where it is."""
    problems = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(problems)


class BodyTooLarge(HTTPException):
    def __init__(self, max_body_bytes: int) -> None:
        super().__init__(413, f"request body is larger than max_body_bytes={max_body_bytes}")


class BodySizeLimit:
    """413 before the body is buffered: from Content-Length when given, else while chunks arrive."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await _json(send, 400, "Content-Length must be a non-negative integer")
                    return
                if declared > self.max_body_bytes:
                    await _json(
                        send, 413, f"request body is {declared} bytes, more than max_body_bytes={self.max_body_bytes}"
                    )
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # An HTTPException passes through FastAPI's body parsing untouched and becomes the 413.
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        await self.app(scope, limited_receive, send)


async def _json(send: Send, status: int, message: str) -> None:
    import orjson

    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------ REST


# Starlette picks a handler by the exception's type; each handler narrows its argument to it.


async def _predictor_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PredictorError)
    return JSONResponse({"error": exc.reason}, status_code=exc.http_status, headers=exc.headers())


async def _http_exception(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"error": "invalid request: " + describe_validation_errors(exc.errors())}, status_code=400)


async def _not_implemented(_: Request, exc: Exception) -> JSONResponse:
    # KServe raises this for model versions (unsupported): that is a missing resource, not a server fault.
    return JSONResponse({"error": f"not supported: {exc}"}, status_code=404)


async def _too_deep(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": "request JSON is nested too deeply"}, status_code=400)


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    # KServe's generic handler puts the exception's type and text in the body; keep those in the log.
    logger.error("internal error", exc_info=exc)
    return JSONResponse({"error": "internal server error"}, status_code=500)


class _DrainingServer(_RefreshingServer):
    """uvicorn, with our drain run first on SIGTERM, while the listeners are still open
    (so new requests get a clean 503 and readiness reads false), then uvicorn's own shutdown."""

    def __init__(self, config: Any, drain: Callable[[], Awaitable[None]], unready: Callable[[], None]) -> None:
        super().__init__(config)
        self._drain = drain
        self._unready = unready

    def handle_exit(self, sig: int, frame: Any) -> None:
        # In the signal handler itself: uvicorn only notices should_exit on its next 0.1 s tick,
        # and a busy loop can take longer; readiness must read false from the first moment.
        self._unready()
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: Any = None) -> None:
        await self._drain()
        await super().shutdown(sockets)


async def _metrics(request: Request) -> Response:
    encoder, content_type = exposition.choose_encoder(request.headers.get("accept", ""))
    return Response(content=encoder(metrics.scrape_registry()), headers={"content-type": content_type})


class _RESTServer(RESTServer):
    def __init__(
        self,
        *args: Any,
        bind_address: str,
        reuse_port: bool,
        limits: RequestLimits,
        drain: Callable[[], Awaitable[None]],
        unready: Callable[[], None],
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.config.host = bind_address
        self._reuse_port = reuse_port
        self._limits = limits
        self._server = _DrainingServer(self.config, drain, unready)

    async def start(self) -> None:
        self.create_application()
        sockets = [bind_reuse_port(self.config.host, self.config.port)] if self._reuse_port else None
        await self._server.serve(sockets=sockets)

    def _register_endpoints(self, app: FastAPI) -> None:
        # Ahead of KServe's own /metrics (the first matching route wins), which reads only
        # this process's registry and would show one worker's share under --workers.
        app.add_api_route("/metrics", _metrics, methods=["GET"], include_in_schema=False)
        # Ahead of KServe's /v2/models/{model_name}, which would take "stats" for a model's name.
        app.add_api_route("/v2/models/stats", self._all_statistics, methods=["GET"])
        app.add_api_route("/v2/models/{model_name}/stats", self._statistics, methods=["GET"])
        app.add_api_route("/v2/models/{model_name}/config", self._config, methods=["GET"])
        super()._register_endpoints(app)

    async def _config(self, model_name: str) -> JSONResponse:
        model = self.dataplane.get_model_from_registry(model_name)  # ModelNotFound: KServe's 404
        describe = getattr(model, "triton_config", None)
        if describe is None:
            raise HTTPException(404, f"model {model_name!r} has no Triton model configuration")
        return JSONResponse(describe())

    async def _statistics(self, model_name: str) -> JSONResponse:
        model = self.dataplane.get_model_from_registry(model_name)  # ModelNotFound: KServe's 404
        return JSONResponse(triton.model_statistics([_with_series(model_name, model)], metrics.scrape_registry()))

    async def _all_statistics(self) -> JSONResponse:
        models = sorted(self.dataplane.model_registry.get_models().items())
        named = [_with_series(name, model) for name, model in models]
        return JSONResponse(triton.model_statistics(named, metrics.scrape_registry()))

    def _add_middlewares(self, app: FastAPI) -> None:
        super()._add_middlewares(app)
        app.add_middleware(BodySizeLimit, max_body_bytes=self._limits.max_body_bytes)

    def _add_exception_handlers(self, app: FastAPI) -> None:
        super()._add_exception_handlers(app)
        app.add_exception_handler(PredictorError, _predictor_error)
        app.add_exception_handler(HTTPException, _http_exception)
        app.add_exception_handler(RequestValidationError, _validation_error)
        app.add_exception_handler(RecursionError, _too_deep)
        app.add_exception_handler(NotImplementedError, _not_implemented)
        app.add_exception_handler(Exception, _internal_error)


# ------------------------------------------------------------------ the server


@dataclass(frozen=True)
class ServerConfig(FlagConfig):
    """Where and how the REST and gRPC servers listen, beyond KServe's own flags."""

    bind_address: str = flag("0.0.0.0", "Address the REST and gRPC servers listen on")
    grace_period_s: int = flag(20, "SIGTERM drain limit (below Kubernetes' 30 s)")
    grpc_reflection: bool = flag(True, "Serve gRPC server reflection, so grpcurl needs no .proto file")
    # Set by the --workers supervisor on its workers' command lines: bind the shared ports.
    reuse_port: bool = flag(False, argparse.SUPPRESS)
    # KServe's own flags (its parser declares them; None: not given, see GrpcMessageLimits).
    grpc_max_receive_message_length: int | None = None
    grpc_max_send_message_length: int | None = None


def _with_series(name: str, model: Any) -> tuple[str, triton.StatisticsSeries]:
    # A model that keeps no series of its own (the combiner) reads as the predictor's: all zeros.
    return name, getattr(model, "statistics_series", triton.PREDICTOR_SERIES)


class PredictorServer(ModelServer):
    def __init__(
        self,
        *,
        config: ServerConfig = ServerConfig(),
        limits: RequestLimits = RequestLimits(),
        tls: TLSConfig = TLSConfig(),
        **kwargs: Any,
    ):
        """`kwargs` are KServe's `ModelServer` arguments (ports, threads, ...). With TLS, KServe's
        constructor moves the default HTTP port 8080 to 8443, as it does for its own servers."""
        super().__init__(
            grace_period=config.grace_period_s, ssl_certfile=tls.ssl_certfile, ssl_keyfile=tls.ssl_keyfile, **kwargs
        )
        self.bind_address = config.bind_address
        self.reuse_port = config.reuse_port
        self.grpc_reflection = config.grpc_reflection
        self.limits = limits
        self.tls = tls
        self.grpc_limits = GrpcMessageLimits.reconcile(config, limits)
        self.dataplane = PredictorDataPlane(model_registry=self.registered_models)
        self.model_repository_extension = ReadOnlyRepository(model_registry=self.registered_models)
        self._drained = False

    def start(self, models: list[Any]) -> None:
        if self.workers > 1:
            # KServe's multi-process mode forks only REST, with an app our hardening does not
            # reach; `python -m predictor --workers N` runs N whole servers instead (workers.py).
            raise ValueError("PredictorServer runs one process; use `python -m predictor --workers N` for more")
        self._register_and_check_atleast_one_model_is_ready(models)
        if not self.reuse_port:
            # Before either server starts: a taken port is then one clear line, not a
            # half-started server cancelled with tracebacks.
            check_port_free(self.bind_address, self.http_port, "REST")
            if self.enable_grpc:
                check_port_free(self.bind_address, self.grpc_port, "gRPC")
        self._rest_server = _RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            access_log_format=self.access_log_format,
            workers=1,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
            ssl_certfile=self.tls.ssl_certfile,
            ssl_keyfile=self.tls.ssl_keyfile,
            bind_address=self.bind_address,
            reuse_port=self.reuse_port,
            limits=self.limits,
            drain=self.drain,
            unready=self.mark_unready,
        )
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = GRPCInferenceServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                grace_period=self.grace_period,
                bind_address=self.bind_address,
                reuse_port=self.reuse_port,
                message_limits=self.grpc_limits,
                tls=self.tls,
                reflection=self.grpc_reflection,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())

    def mark_unready(self) -> None:
        for model in self.registered_models.get_models().values():
            model.ready = False

    async def drain(self) -> None:
        """Readiness false, refuse new work, finish everything accepted, stop gRPC: the SIGTERM path."""
        if self._drained:
            return
        self._drained = True
        logger.info("draining: readiness false, finishing in-flight requests")
        self.mark_unready()
        for model in list(self.registered_models.get_models().values()):
            stop_serving = getattr(model, "stop_serving", None)
            if stop_serving is not None:
                await stop_serving()
        if self._grpc_server is not None:
            await self._grpc_server.stop()
        logger.info("drained")
