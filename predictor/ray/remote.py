"""`RemoteClassifier`: the in-process model's request path, with the images run by the
classifier replicas instead of a local engine.

KServe's own `RayModel` forwards the raw request to the replica, which fails for every gRPC
request (the `InferRequest` keeps its protobuf parameter map, which cannot be pickled) and
makes each replica decode. Here the front end decodes and checks the request with the codec
(`ImageModel`), sends the replicas plain `Job`s over the Serve `DeploymentHandle`, and encodes
their predictions: every protocol works, and a bad request is refused before it costs a
replica anything.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kserve.errors import InvalidInput
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RayServeException
from ray.serve.handle import DeploymentHandle

from ..errors import DeadlineExceeded, ServerBusy
from ..jobs import Job, Prediction
from ..limits import RequestLimits
from ..model import ImageModel

logger = logging.getLogger(__name__)

# Past the request's own deadline, how long to wait for a replica that does not answer at all
# (the replica enforces the deadline itself; this catches one that hangs).
_DEADLINE_SLACK_S = 5.0
# Releasing the replicas talks to Ray, which may already be gone (a Ctrl-C reaches Ray's own
# processes too): the server's exit must not wait on it for long.
_RELEASE_TIMEOUT_S = 10.0


class RemoteClassifier(ImageModel):
    def __init__(
        self,
        name: str,
        handle: DeploymentHandle[Any],
        *,
        limits: RequestLimits = RequestLimits(),
        request_timeout_ms: float | None = 10_000.0,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name, limits=limits, request_timeout_ms=request_timeout_ms)
        self._handle = handle
        self._on_stop = on_stop
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

    async def __call__(self, body: Any, headers: dict[str, str] | None = None, verb: Any = None, **kwargs: Any) -> Any:
        # Tracked, so that a drain waits for requests already on their way to a replica.
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            return await super().__call__(body, headers, verb, **kwargs)
        finally:
            if task is not None:
                self._inflight.discard(task)

    def reject_if_full(self) -> None:
        if self._closing:
            raise ServerBusy("shutting down")

    async def infer(self, jobs: list[Job], timeout_ms: float | None) -> list[Prediction]:
        # Inference has no side effects: a request whose replica died is sent once more, to
        # another replica, before the client is told to retry.
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        for attempt in (1, 2):
            if deadline is not None:
                timeout_ms = (deadline - time.monotonic()) * 1000
            response = self._handle.infer.remote(jobs, timeout_ms)
            try:
                predictions: list[Prediction]
                if timeout_ms is None:
                    predictions = await response
                else:
                    predictions = await asyncio.wait_for(response, timeout_ms / 1000 + _DEADLINE_SLACK_S)
                return predictions
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
            done.get_loop().call_soon_threadsafe(_resolve, done)

    threading.Thread(target=run, name="release-replicas", daemon=True).start()
    try:
        await asyncio.wait_for(done, timeout_s)
    except asyncio.TimeoutError:
        logger.warning("releasing the replicas took longer than %.0f s; exiting without waiting", timeout_s)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
