"""Dynamic batching: coalesce images from concurrent requests into device batches.

Every protocol handler (v1 REST, v2 REST, v2 gRPC) runs on one event loop and
calls `DynamicBatcher.submit` with the images of one request. The images join one
FIFO queue; a single dispatcher task cuts it into batches of at most
`max_batch_size` and hands each to the async handler, keeping up to
`max_concurrent_batches` handler calls in flight so that the next batch can be
decoded while the previous one runs on the device.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from kserve.errors import InvalidInput

from .errors import DeadlineExceeded, ServerBusy
from .flags import FlagConfig, flag
from .metrics import (
    BATCH_SIZE,
    EXPIRED,
    INFLIGHT_BATCHES,
    QUEUE_DEPTH,
    QUEUE_WAIT_SECONDS,
    REJECTED,
    ModelMetric,
)

T = TypeVar("T")
R = TypeVar("R")

BatchHandler = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A request failed while its submitter was being cancelled would otherwise log
    # "Future exception was never retrieved" when garbage-collected.
    if not future.cancelled():
        future.exception()


@dataclass(eq=False)  # hashed by identity: requests are collected in sets
class _Request(Generic[R]):
    future: asyncio.Future[list[R]]
    size: int
    enqueued_at: float
    deadline: float | None
    timeout_ms: float | None
    results: list[R | BaseException | None] = field(init=False)
    pending: int = field(init=False)  # items whose result has not come back yet
    queued: int = field(init=False)  # items still in the queue, not yet dispatched
    timer: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        self.results = [None] * self.size
        self.pending = self.queued = self.size

    def fail(self, error: BaseException | None) -> None:
        """Settle the request with `error`, or cancel it when `error` is None."""
        if self.timer is not None:
            self.timer.cancel()
        if self.future.done():
            return
        if error is None:
            self.future.cancel()
        else:
            self.future.set_exception(error)

    def finish(self, index: int, result: R | BaseException) -> None:
        if self.future.done():  # cancelled or expired: nobody wants the rest
            return
        self.results[index] = result
        self.pending -= 1
        if self.pending:
            return
        error = next((r for r in self.results if isinstance(r, BaseException)), None)
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(cast("list[R]", self.results))


@dataclass(slots=True)
class _Item(Generic[T]):
    request: _Request[Any]
    index: int
    value: T


@dataclass(frozen=True)
class QueueMetrics:
    """Where a batcher reports: the predictor's metrics by default; a transformer's queue reports
    under names of its own, so a pod's sums never mix the two."""

    batch_size: ModelMetric
    queue_wait_seconds: ModelMetric
    queue_depth: ModelMetric
    inflight_batches: ModelMetric
    rejected: ModelMetric
    expired: ModelMetric


PREDICTOR_QUEUE_METRICS = QueueMetrics(BATCH_SIZE, QUEUE_WAIT_SECONDS, QUEUE_DEPTH, INFLIGHT_BATCHES, REJECTED, EXPIRED)


@dataclass(frozen=True)
class BatchingConfig(FlagConfig):
    """How the batcher cuts batches and when it refuses; checked once, here."""

    max_batch_size: int = flag(32, "Images per device batch")
    max_latency_ms: float = flag(5.0, "Longest the first image waits for companions")
    max_queue_size: int = flag(1024, "Images waiting; beyond it: 503 + Retry-After")
    request_timeout_ms: float | None = flag(10_000.0, "Queued longer than this: 504", parse=float)
    max_concurrent_batches: int = flag(2, "Batches in flight (prepare overlaps inference)")

    def __post_init__(self) -> None:
        if not _is_int(self.max_batch_size) or self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {self.max_batch_size!r}")
        if not _is_number(self.max_latency_ms) or not self.max_latency_ms >= 0:
            raise ValueError(f"max_latency_ms must be a number >= 0, got {self.max_latency_ms!r}")
        if not _is_int(self.max_queue_size) or self.max_queue_size < self.max_batch_size:
            raise ValueError(
                f"max_queue_size must be an integer >= max_batch_size ({self.max_batch_size}), "
                f"got {self.max_queue_size!r}"
            )
        timeout = self.request_timeout_ms
        if timeout is not None and (not _is_number(timeout) or not timeout > 0):
            raise ValueError(f"request_timeout_ms must be None or a number > 0, got {timeout!r}")
        if not _is_int(self.max_concurrent_batches) or self.max_concurrent_batches < 1:
            raise ValueError(f"max_concurrent_batches must be an integer >= 1, got {self.max_concurrent_batches!r}")


class DynamicBatcher(Generic[T, R]):
    """Queue images from concurrent requests and run them through `handler` in batches.

    The handler gets a list of at most `max_batch_size` items and must return one
    entry per item, in order: a result, or an exception instance that fails only
    the request that item belongs to.
    """

    def __init__(
        self, handler: BatchHandler[T, R], config: BatchingConfig, metrics: QueueMetrics = PREDICTOR_QUEUE_METRICS
    ) -> None:
        self._handler = handler
        self.config = config
        self._metrics = metrics
        self._max_batch_size = config.max_batch_size
        self._max_latency_s = config.max_latency_ms / 1000
        self._max_queue_size = config.max_queue_size
        self._request_timeout_ms = config.request_timeout_ms
        self._queue: deque[_Item[T]] = deque()
        # Set when the dispatcher may have something to do: the first item arrived,
        # a batch is full, or close() was called. Since Python 3.10 asyncio
        # primitives bind to a loop on first use, so this works outside a loop.
        self._ready = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_concurrent_batches)
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._inflight = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def queue_depth(self) -> int:
        """Images waiting in the queue, not yet dispatched."""
        return len(self._queue)

    @property
    def inflight_batches(self) -> int:
        return self._inflight

    def reject_if_full(self) -> None:
        """Refuse at once when not even one more image fits: lets callers skip decoding a
        request that `submit` would refuse anyway, which is what keeps overload cheap."""
        if self._closing:
            raise ServerBusy("shutting down")
        depth = len(self._queue)
        if depth >= self._max_queue_size:
            self._metrics.rejected.inc()
            raise ServerBusy(f"queue full: {depth} images waiting, max_queue_size={self._max_queue_size}; retry later")

    def start(self) -> None:
        """Start the dispatcher on the running loop; `submit` does this itself."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="DynamicBatcher.dispatcher")

    async def submit(self, items: Sequence[T], timeout_ms: float | None = None) -> list[R]:
        """Batch `items` with other requests' and return their results in order.

        `timeout_ms` overrides the batcher's `request_timeout_ms`; a value <= 0
        means the caller's deadline has already passed.
        """
        size = len(items)
        if self._closing:
            raise ServerBusy("shutting down")
        if size == 0:
            return []
        if size > self._max_queue_size:
            # Retrying cannot help, so this is the client's error (400), not a 503.
            raise InvalidInput(
                f"request has {size} images but max_queue_size={self._max_queue_size}: "
                "it can never fit; send fewer images per request"
            )
        depth = len(self._queue)
        if depth + size > self._max_queue_size:
            self._metrics.rejected.inc()
            raise ServerBusy(
                f"queue full: {depth} images waiting, {size} more would exceed "
                f"max_queue_size={self._max_queue_size}; retry later"
            )
        timeout = self._request_timeout_ms if timeout_ms is None else timeout_ms
        if timeout is not None and timeout <= 0:
            self._metrics.expired.inc(size)
            raise DeadlineExceeded(f"request timeout of {timeout:g} ms had passed before it was queued")

        self.start()
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        request: _Request[R] = _Request(
            future=loop.create_future(),
            size=size,
            enqueued_at=now,
            deadline=None if timeout is None else now + timeout / 1000,
            timeout_ms=timeout,
        )
        request.future.add_done_callback(_retrieve)
        if timeout is not None:
            # Fails the request when its deadline passes, even while the dispatcher
            # is busy elsewhere, rather than when its turn finally comes.
            request.timer = loop.call_later(timeout / 1000, self._on_deadline, request)
        self._queue.extend(_Item(request, i, x) for i, x in enumerate(items))
        self._metrics.queue_depth.inc(size)
        if depth == 0 or len(self._queue) >= self._max_batch_size:
            self._ready.set()
        try:
            return await request.future
        except asyncio.CancelledError:
            # The client went away: free its queue slots now; results of its
            # already-dispatched items are dropped by `_Request.finish`.
            request.fail(None)
            self._remove({request})
            raise

    async def close(self) -> None:
        """Stop accepting requests, finish everything queued or in flight, then stop."""
        self._closing = True
        self._ready.set()
        if self._task is not None:
            # Shielded: a caller giving up on close() must not kill in-flight work.
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()
            batch = await self._next_batch()
            if not batch:  # closing and drained
                self._slots.release()
                break
            self._dispatch(batch)
        if self._batch_tasks:
            await asyncio.gather(*self._batch_tasks, return_exceptions=True)

    async def _next_batch(self) -> list[_Item[T]]:
        loop = asyncio.get_running_loop()
        while True:
            now = time.monotonic()
            self._expire_head(now)
            wait_s: float | None = None
            if self._queue:
                # Measured from the first item's enqueue, not from when a slot
                # freed up: time spent waiting for a slot counts toward the latency.
                wait_s = self._queue[0].request.enqueued_at + self._max_latency_s - now
                if wait_s <= 0 or self._closing or len(self._queue) >= self._max_batch_size:
                    return self._take(now)
            elif self._closing:
                return []
            # No await since the checks above, so a set() cannot be lost here.
            self._ready.clear()
            timer = None if wait_s is None else loop.call_later(wait_s, self._ready.set)
            try:
                await self._ready.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    def _take(self, now: float) -> list[_Item[T]]:
        batch = [self._queue.popleft() for _ in range(min(self._max_batch_size, len(self._queue)))]
        self._metrics.queue_depth.dec(len(batch))
        for item in batch:
            request = item.request
            self._metrics.queue_wait_seconds.observe(now - request.enqueued_at)
            request.queued -= 1
            if request.queued == 0 and request.timer is not None:
                request.timer.cancel()  # on the device now: let it finish
        return batch

    def _dispatch(self, batch: list[_Item[T]]) -> None:
        self._metrics.batch_size.observe(len(batch))
        self._inflight += 1
        self._metrics.inflight_batches.inc()
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)

    async def _run_batch(self, batch: list[_Item[T]]) -> None:
        error: BaseException | None = None
        try:
            results = await self._handler([item.value for item in batch])
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batch handler returned {len(results)} results for a batch of "
                    f"{len(batch)} items; it must return exactly one result or "
                    "exception per item"
                )
        except BaseException as exc:  # delivered to the requests, never lost
            error = exc
        finally:
            self._inflight -= 1
            self._metrics.inflight_batches.dec()
            self._slots.release()
        outcomes: Sequence[R | BaseException] = results if error is None else [error] * len(batch)
        for item, outcome in zip(batch, outcomes, strict=False):
            item.request.finish(item.index, outcome)
        if error is not None and not isinstance(error, Exception):
            raise error  # cancellation or interpreter exit: let it propagate

    def _expire_head(self, now: float) -> None:
        """Drop expired requests among the items the next batch would take. Only the head: the
        per-request timers catch the rest promptly, and a whole-queue scan per batch is wasted work."""
        while True:
            expired = {
                i.request for i in itertools.islice(self._queue, self._max_batch_size) if _expired(i.request, now)
            }
            if not expired:
                return
            self._expire(expired)

    def _on_deadline(self, request: _Request[Any]) -> None:
        if request.queued:
            self._expire({request})

    def _expire(self, requests: set[_Request[Any]]) -> None:
        if not requests:
            return
        removed = {r: r.queued for r in requests}
        self._remove(requests)
        for request, count in removed.items():
            self._metrics.expired.inc(count)
            request.fail(
                DeadlineExceeded(
                    f"request timeout of {request.timeout_ms:g} ms passed with "
                    f"{count} of {request.size} images still waiting in the batching queue"
                )
            )

    def _remove(self, requests: set[_Request[Any]]) -> None:
        if not any(r.queued for r in requests):
            return
        before = len(self._queue)
        self._queue = deque(i for i in self._queue if i.request not in requests)
        self._metrics.queue_depth.dec(before - len(self._queue))
        for request in requests:
            request.queued = 0


def _expired(request: _Request[Any], now: float) -> bool:
    return request.deadline is not None and request.deadline <= now


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
