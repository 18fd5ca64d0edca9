"""`RemoteClassifier`: KServe's `RayModel`, sending decoded images to the classifier replicas.

KServe's `RayModel` forwards the raw request to the replica, which fails for every gRPC
request (the `InferRequest` keeps its protobuf parameter map, which cannot be pickled) and
makes each replica decode. Here the front end decodes and checks the request with the codec,
sends the replicas plain `Job`s, and encodes their predictions: every protocol works, and a
bad request is refused before it costs a replica anything.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kserve.errors import InvalidInput
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferRequest
from kserve.ray import RayModel
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RayServeException
from ray.serve.handle import DeploymentHandle

from .. import codec, metrics
from ..errors import DeadlineExceeded, ServerBusy
from ..limits import RequestLimits
from ..model import _trim as trim
from .replica import ModelInfo

logger = logging.getLogger(__name__)

# Past the request's own deadline, how long to wait for a replica that does not answer at all
# (the replica enforces the deadline itself; this catches one that hangs).
_DEADLINE_SLACK_S = 5.0
# Releasing the replicas talks to Ray, which may already be gone (a Ctrl-C reaches Ray's own
# processes too): the server's exit must not wait on it for long.
_RELEASE_TIMEOUT_S = 10.0


class RemoteClassifier(RayModel):
    def __init__(
        self,
        name: str,
        handle: DeploymentHandle,
        *,
        limits: RequestLimits = RequestLimits(),
        request_timeout_ms: float | None = 10_000.0,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name, handle)
        self.limits = limits
        self.request_timeout_ms = request_timeout_ms
        self._on_stop = on_stop
        self.info: ModelInfo | None = None
        self._closing = False
        self._inflight: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> bool:
        """Wait until a replica has loaded the model, and learn its shape and labels. Blocking:
        call it before the event loop runs (KServe's data plane also calls it for a model that
        is not ready, which while draining must not start anything)."""
        if self.info is None and not self._closing:
            self.info = self._handle.describe.remote().result()
        self.ready = self.info is not None and not self._closing
        return self.ready

    async def load_async(self) -> bool:
        if self.info is None:
            self.info = await self._handle.describe.remote()
        self.ready = not self._closing
        return self.ready

    async def stop_serving(self) -> None:
        """Drain: refuse new requests, wait for those already sent to a replica."""
        self._closing = True
        self.ready = False
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._on_stop is not None:
            on_stop, self._on_stop = self._on_stop, None
            await _run_bounded(on_stop, _RELEASE_TIMEOUT_S)

    # ------------------------------------------------------------------ request path

    async def __call__(
        self, body: Any, headers: dict[str, str] | None = None, verb: InferenceVerb = InferenceVerb.PREDICT
    ) -> tuple[Any, dict[str, str]]:
        start = time.perf_counter()
        metrics.INFLIGHT_REQUESTS.inc()
        status = "error"
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            if verb != InferenceVerb.PREDICT:
                # As for the in-process model: the server answers this with 404 "not supported".
                raise NotImplementedError("explain is not supported by this model")
            result = await self._predict(body)
            status = "ok"
            return result, {}
        except InvalidInput:
            status = "invalid"
            raise
        except ServerBusy:
            status = "busy"
            raise
        except DeadlineExceeded:
            status = "timeout"
            raise
        finally:
            self._inflight.discard(task)  # type: ignore[arg-type]
            metrics.INFLIGHT_REQUESTS.dec()
            metrics.REQUESTS.labels(status).inc()
            metrics.REQUEST_SECONDS.observe(time.perf_counter() - start)

    async def _predict(self, body: Any) -> Any:
        if self._closing:
            raise ServerBusy("shutting down")
        info = self.info
        if info is None:
            raise ServerBusy("the model is still loading; retry later")
        received_at = time.monotonic()
        if isinstance(body, InferRequest):
            decoded = codec.decode_v2(body, info.shape, self.limits)
        else:
            decoded = codec.decode_v1(body, info.shape, self.limits)
        k = codec.max_top_k(decoded)
        jobs = [codec.Job(image, k) for image in decoded.images]
        predictions = await self._infer(jobs, received_at)
        if decoded.v2_request is None:
            return codec.encode_v1([trim(p, decoded.top_k) for p in predictions], info.labels)
        return codec.encode_v2(decoded, predictions, info.labels, self.name)

    async def _infer(self, jobs: list[codec.Job], received_at: float) -> list[codec.Prediction]:
        # Inference has no side effects: a request whose replica died is sent once more, to
        # another replica, before the client is told to retry.
        for attempt in (1, 2):
            timeout_ms = self._remaining_ms(received_at)
            response = self._handle.infer.remote(jobs, timeout_ms)
            try:
                if timeout_ms is None:
                    return await response
                return await asyncio.wait_for(response, timeout_ms / 1000 + _DEADLINE_SLACK_S)
            except RayTaskError as e:
                raise _replica_error(e) from None
            except asyncio.TimeoutError as e:
                raise DeadlineExceeded(
                    f"no replica answered within the request timeout of {self.request_timeout_ms:g} ms"
                ) from e
            except BackPressureError as e:
                raise ServerBusy(f"every replica is at its queue limit; retry later ({e.message})") from e
            except (RayActorError, DeploymentUnavailableError, RayServeException) as e:
                if attempt == 2 or self._closing:
                    logger.warning("replica call failed: %s", _first_line(e))
                    raise ServerBusy("no replica could take the request (one is restarting); retry later") from e
                logger.info("replica call failed, retrying once on another replica: %s", _first_line(e))
        raise AssertionError("unreachable")

    def _remaining_ms(self, received_at: float) -> float | None:
        if self.request_timeout_ms is None:
            return None
        return self.request_timeout_ms - (time.monotonic() - received_at) * 1000

    # ------------------------------------------------------------------ metadata

    def get_input_types(self) -> list[dict]:
        return self.info.input_types if self.info else []

    def get_output_types(self) -> list[dict]:
        return self.info.output_types if self.info else []


async def _run_bounded(function: Callable[[], None], timeout_s: float) -> None:
    """Run a blocking call off the loop, giving up after `timeout_s`; a daemon thread, so that
    a call that never returns does not hold the process at exit either."""
    done = asyncio.get_running_loop().create_future()

    def run() -> None:
        try:
            function()
        except Exception as e:
            logger.warning("releasing the replicas failed: %s", _first_line(e))
        finally:
            done.get_loop().call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    threading.Thread(target=run, name="release-replicas", daemon=True).start()
    try:
        await asyncio.wait_for(done, timeout_s)
    except asyncio.TimeoutError:
        logger.warning("releasing the replicas took longer than %.0f s; exiting without waiting", timeout_s)


def _replica_error(error: RayTaskError) -> BaseException:
    """The replica's own exception (a 400, 503 or 504 keeps its status); anything else is a 500
    whose details stay in the log."""
    cause = error.cause
    if isinstance(cause, (InvalidInput, ServerBusy, DeadlineExceeded)):
        return cause
    logger.error("replica failed: %s", error)
    return RuntimeError("the replica failed to run the request")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
