"""The Serve ingress: KServe's v1 and v2 REST app with this project's hardening, and KServe's
gRPC servicer behind Serve's gRPC proxy, in front of the classifier replicas.

Nothing about the protocols is written here: REST is the app `predictor.server` builds for its
own server (routes, body limit, error handlers), gRPC is KServe's `InferenceServicer`, and both
reach the replicas through the same `RemoteClassifier` as `python -m predictor --ray_replicas`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from fastapi import FastAPI
from grpc_interceptor.exceptions import GrpcException
from kserve.errors import (
    InferenceError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerNotLive,
    ServerNotReady,
    UnsupportedProtocol,
)
from kserve.model_repository import ModelRepository
from kserve.model_server import FASTAPI_APP_IMPORT_STRING
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.servicer import InferenceServicer
from ray import serve
from ray.serve.handle import DeploymentHandle
from uvicorn.importer import import_from_string

from ..limits import RequestLimits
from ..server import PredictorDataPlane, ReadOnlyRepository, _RESTServer
from . import grpc_service  # noqa: F401  (makes KServe's message classes unpicklable here)
from .config import INGRESS_DEPLOYMENT
from .remote import RemoteClassifier

logger = logging.getLogger(__name__)

# What KServe's own gRPC interceptor answers for its errors (kserve.protocol.grpc.interceptors);
# this project's errors carry their code themselves (GrpcException.status_code).
_GRPC_CODES: dict[type[BaseException], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    InferenceError: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    ServerNotReady: grpc.StatusCode.UNAVAILABLE,
    ServerNotLive: grpc.StatusCode.UNAVAILABLE,
    UnsupportedProtocol: grpc.StatusCode.INVALID_ARGUMENT,
    NotImplementedError: grpc.StatusCode.UNIMPLEMENTED,
}


class Ingress:
    # Serve awaits an async constructor before it routes any request to the replica.
    async def __init__(  # type: ignore[misc]
        self,
        classifier: DeploymentHandle[Any],
        *,
        model_name: str,
        limits: RequestLimits,
        request_timeout_ms: float | None,
    ) -> None:
        self.model = RemoteClassifier(model_name, classifier, limits=limits, request_timeout_ms=request_timeout_ms)
        await self.model.load_async()
        registry = ModelRepository()
        registry.update(self.model)
        self.limits = limits
        self.dataplane = PredictorDataPlane(model_registry=registry)
        self.repository = ReadOnlyRepository(model_registry=registry)
        self.servicer = InferenceServicer(self.dataplane, self.repository)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The REST app `python -m predictor` serves, built here (Serve calls this once the
        constructor has run) and run by Serve's HTTP proxy instead of uvicorn."""

        async def drain() -> None:
            await self.model.stop_serving()

        def unready() -> None:
            self.model.ready = False

        rest = _RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.repository,
            0,  # no port: Serve's proxy owns the listener
            bind_address="127.0.0.1",
            reuse_port=False,
            limits=self.limits,
            drain=drain,
            unready=unready,
        )
        rest.create_application()
        app: FastAPI = import_from_string(FASTAPI_APP_IMPORT_STRING)
        return app

    async def __del__(self) -> None:
        await self.model.stop_serving()

    async def _grpc(self, rpc: str, request: Any, grpc_context: Any, empty: type) -> Any:
        """KServe's servicer method `rpc`; an error becomes its status code and message on the
        context (Serve's proxy sends those), never Serve's INTERNAL with a stack trace."""
        try:
            return await getattr(self.servicer, rpc)(request, _ServicerContext(grpc_context))
        except Exception as e:
            code, details = grpc_status(e)
            grpc_context.set_code(code)
            grpc_context.set_details(details)
            return empty()


def _forward(name: str, empty: type) -> Callable[[Ingress, Any, Any], Awaitable[Any]]:
    async def method(self: Ingress, request: Any, grpc_context: Any) -> Any:
        return await self._grpc(name, request, grpc_context, empty)

    method.__name__ = method.__qualname__ = name
    return method


# Serve's gRPC proxy calls the ingress method named after the RPC: one for each RPC of the
# service KServe's servicer implements, taken from its proto so that none can be left out.
for _rpc in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
    setattr(Ingress, _rpc.name, _forward(_rpc.name, getattr(pb, _rpc.output_type.name)))


def grpc_status(error: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, GrpcException):
        return error.status_code, str(error)
    for kind, code in _GRPC_CODES.items():
        if isinstance(error, kind):
            return code, str(getattr(error, "reason", error))
    logger.error("internal error", exc_info=error)
    return grpc.StatusCode.INTERNAL, "internal server error"


class _ServicerContext:
    """What KServe's servicer reads from a context (the request metadata, as grpc's key/value
    items), over Serve's context, which keeps metadata as plain tuples."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def invocation_metadata(self) -> list[_Metadatum]:
        return [_Metadatum(key, value) for key, value in self._context.invocation_metadata()]


class _Metadatum:
    __slots__ = ("key", "value")

    def __init__(self, key: str, value: Any) -> None:
        self.key = key
        self.value = value


IngressDeployment = serve.deployment(name=INGRESS_DEPLOYMENT)(serve.ingress()(Ingress))
