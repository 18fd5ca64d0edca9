"""Specification of `predictor.batching.DynamicBatcher`.

Every test runs its own event loop via `asyncio.run` (no pytest-asyncio) under a
short timeout, and controls the handler through an `asyncio.Event` gate rather
than sleeps wherever ordering matters, so that the tests stay deterministic.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from kserve.errors import InvalidInput
from prometheus_client import REGISTRY

import predictor.batching as batching
from predictor.batching import BatchingConfig, DynamicBatcher
from predictor.errors import DeadlineExceeded, ServerBusy
from predictor.metrics import MODEL_LABEL, served_model

LONG_MS = 10_000.0  # a latency or timeout no test ever waits out


def async_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), timeout=5))

    return wrapper


def metric(name: str) -> float:
    """The batcher's series, under whichever model this process has bound (none: `model_name=""`)."""
    return REGISTRY.get_sample_value(name, {MODEL_LABEL: served_model()}) or 0.0


class Handler:
    """Records every batch; optionally blocks on `gate` so a test decides when batches end."""

    def __init__(self, gated: bool = False, fail_on: object = None) -> None:
        self.batches: list[list[Any]] = []
        self.times: list[float] = []
        self.gate: asyncio.Event | None = asyncio.Event() if gated else None
        self.fail_on = fail_on
        self.active = 0
        self.max_active = 0

    async def __call__(self, items: list[Any]) -> Sequence[Any]:
        self.batches.append(list(items))
        self.times.append(time.monotonic())
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0)
        finally:
            self.active -= 1
        return [ValueError(f"bad item {x!r}") if x == self.fail_on else ("ok", x) for x in items]

    @property
    def seen(self) -> list[Any]:
        return [x for batch in self.batches for x in batch]


def make(handler: Callable[[list[Any]], Awaitable[Sequence[Any]]], **overrides: Any) -> DynamicBatcher[Any, Any]:
    kwargs: dict[str, Any] = dict(max_batch_size=4, max_latency_ms=LONG_MS, max_queue_size=16, request_timeout_ms=None)
    kwargs.update(overrides)
    return DynamicBatcher(handler, BatchingConfig(**kwargs))


async def settle() -> None:
    """Let every ready callback and task run (a few loop iterations, no real time)."""
    for _ in range(10):
        await asyncio.sleep(0)


# --- when batches are dispatched ---------------------------------------------------


@async_test
async def test_full_batch_dispatches_at_once_without_waiting_for_latency() -> None:
    handler = Handler()
    batcher = make(handler, max_batch_size=4, max_latency_ms=LONG_MS)
    start = time.monotonic()
    first = asyncio.create_task(batcher.submit([0]))
    await settle()  # the dispatcher is now waiting out the latency for a partial batch
    assert handler.batches == []
    results = await asyncio.gather(first, *(batcher.submit([i]) for i in range(1, 4)))
    assert time.monotonic() - start < 1.0
    assert results == [[("ok", i)] for i in range(4)]
    assert handler.batches == [[0, 1, 2, 3]]  # the four requests coalesced into one batch
    await batcher.close()


@async_test
async def test_partial_batch_is_held_until_max_latency() -> None:
    handler = Handler()
    batcher = make(handler, max_batch_size=4, max_latency_ms=LONG_MS)
    task = asyncio.create_task(batcher.submit([0, 1]))
    done, _ = await asyncio.wait({task}, timeout=0.1)
    assert not done and handler.batches == [] and batcher.queue_depth == 2
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await batcher.close()


@async_test
async def test_latency_counts_from_the_first_item_not_the_last() -> None:
    handler = Handler()
    batcher = make(handler, max_batch_size=4, max_latency_ms=200)
    start = time.monotonic()
    first = asyncio.create_task(batcher.submit(["a"]))
    await asyncio.sleep(0.15)
    second = asyncio.create_task(batcher.submit(["b"]))
    assert await first == [("ok", "a")] and await second == [("ok", "b")]
    assert handler.batches == [["a", "b"]]
    waited = handler.times[0] - start
    # Dispatched 200 ms after "a" arrived, well before "b"'s own 200 ms (at 350 ms).
    assert 0.195 <= waited < 0.34, waited
    await batcher.close()


@async_test
async def test_zero_latency_dispatches_what_is_queued_and_accumulates_while_busy() -> None:
    handler = Handler(gated=True)
    batcher = make(handler, max_batch_size=8, max_latency_ms=0, max_concurrent_batches=1)
    first = asyncio.create_task(batcher.submit([0]))
    await settle()
    assert handler.batches == [[0]]  # alone, at once: nothing to wait for
    rest = [asyncio.create_task(batcher.submit([i])) for i in range(1, 6)]
    await settle()
    assert batcher.queue_depth == 5 and len(handler.batches) == 1  # the only slot is busy
    assert handler.gate is not None
    handler.gate.set()
    assert await asyncio.gather(first, *rest) == [[("ok", i)] for i in range(6)]
    assert handler.batches == [[0], [1, 2, 3, 4, 5]]  # everything that piled up, in one batch
    await batcher.close()


# --- batch size and routing of results ---------------------------------------------


@async_test
async def test_request_larger_than_max_batch_size_spreads_over_batches_in_order() -> None:
    handler = Handler()
    batcher = make(handler, max_batch_size=4, max_latency_ms=1)
    assert await batcher.submit(list(range(10))) == [("ok", i) for i in range(10)]
    assert [len(b) for b in handler.batches] == [4, 4, 2]
    assert await batcher.submit([]) == []
    await batcher.close()


@async_test
async def test_many_concurrent_requests_of_varying_sizes_get_their_own_results() -> None:
    rng = random.Random(7)
    handler = Handler()
    batcher = make(handler, max_batch_size=8, max_latency_ms=2, max_queue_size=1024)
    requests = [[(r, i) for i in range(rng.randint(1, 20))] for r in range(60)]
    results = await asyncio.gather(*(batcher.submit(items) for items in requests))
    for items, got in zip(requests, results, strict=False):
        assert got == [("ok", x) for x in items]
    assert all(1 <= len(b) <= 8 for b in handler.batches)
    assert sorted(handler.seen) == sorted(x for items in requests for x in items)
    await batcher.close()


# --- queue cap -----------------------------------------------------------------------


@async_test
async def test_queue_cap_rejects_at_once_and_leaves_the_queue_unchanged() -> None:
    handler = Handler(gated=True)
    batcher = make(handler, max_batch_size=2, max_queue_size=4, max_latency_ms=0, max_concurrent_batches=1)
    depth0, rejected0 = metric("predictor_queue_depth"), metric("predictor_rejected_total")
    running = asyncio.create_task(batcher.submit([0, 1]))
    await settle()
    queued = asyncio.create_task(batcher.submit([2, 3, 4]))
    await settle()
    assert batcher.queue_depth == 3

    start = time.monotonic()
    with pytest.raises(ServerBusy) as exc:
        await batcher.submit([5, 6])
    assert time.monotonic() - start < 0.05
    assert str(exc.value) == ("queue full: 3 images waiting, 2 more would exceed max_queue_size=4; retry later")
    assert batcher.queue_depth == 3
    assert metric("predictor_queue_depth") - depth0 == 3
    assert metric("predictor_rejected_total") - rejected0 == 1

    fits = asyncio.create_task(batcher.submit([7]))  # exactly up to the cap is fine
    await settle()
    assert batcher.queue_depth == 4
    assert handler.gate is not None
    handler.gate.set()
    assert [len(r) for r in await asyncio.gather(running, queued, fits)] == [2, 3, 1]
    assert 5 not in handler.seen and 6 not in handler.seen
    await batcher.close()
    assert metric("predictor_queue_depth") == depth0


@async_test
async def test_reject_if_full_refuses_only_when_not_one_more_image_fits() -> None:
    handler = Handler(gated=True)
    batcher = make(handler, max_batch_size=2, max_queue_size=2, max_latency_ms=0, max_concurrent_batches=1)
    running = asyncio.create_task(batcher.submit([0, 1]))  # dispatched, holds the only slot
    await settle()
    batcher.reject_if_full()  # empty queue: room
    queued = asyncio.create_task(batcher.submit([2]))
    await settle()
    batcher.reject_if_full()  # one of two places taken: room
    also_queued = asyncio.create_task(batcher.submit([3]))
    await settle()
    rejected0 = metric("predictor_rejected_total")
    with pytest.raises(ServerBusy, match="queue full: 2 images waiting, max_queue_size=2"):
        batcher.reject_if_full()
    assert metric("predictor_rejected_total") - rejected0 == 1
    assert handler.gate is not None
    handler.gate.set()
    assert [len(r) for r in await asyncio.gather(running, queued, also_queued)] == [2, 1, 1]
    await batcher.close()


@async_test
async def test_request_that_can_never_fit_is_rejected() -> None:
    batcher = make(Handler(), max_batch_size=2, max_queue_size=4)
    with pytest.raises(InvalidInput, match=r"5 images but max_queue_size=4: it can never fit"):
        await batcher.submit([0, 1, 2, 3, 4])
    assert batcher.queue_depth == 0
    await batcher.close()


# --- deadlines -----------------------------------------------------------------------


@async_test
async def test_request_expiring_in_the_queue_fails_promptly_and_never_reaches_the_handler() -> None:
    handler = Handler(gated=True)
    batcher = make(handler, max_batch_size=2, max_latency_ms=0, max_concurrent_batches=1, request_timeout_ms=50)
    expired0 = metric("predictor_expired_total")
    running = asyncio.create_task(batcher.submit([0, 1], timeout_ms=LONG_MS))  # override: no hurry
    await settle()
    late = asyncio.create_task(batcher.submit([2, 3]))  # default 50 ms, stuck behind the gate
    done, _ = await asyncio.wait({late}, timeout=1.0)
    assert done, "the request must fail when its deadline passes, not when its turn comes"
    with pytest.raises(DeadlineExceeded, match="50 ms"):
        late.result()
    assert batcher.queue_depth == 0
    assert metric("predictor_expired_total") - expired0 == 2

    assert handler.gate is not None
    handler.gate.set()
    assert await running == [("ok", 0), ("ok", 1)]
    assert await batcher.submit([4]) == [("ok", 4)]
    assert handler.seen == [0, 1, 4]
    await batcher.close()


@async_test
async def test_items_past_their_deadline_are_dropped_when_the_batch_is_formed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Jump the batcher's clock past a deadline the event loop's timer has not reached,
    # to check the dispatch-time filter on its own.
    offset = 0.0
    fake_time = SimpleNamespace(monotonic=lambda: time.monotonic() + offset)
    monkeypatch.setattr(batching, "time", fake_time)
    handler = Handler(gated=True)
    batcher = make(handler, max_batch_size=4, max_latency_ms=0, max_concurrent_batches=1)
    expired0 = metric("predictor_expired_total")
    running = asyncio.create_task(batcher.submit(["a"]))
    await settle()
    doomed = asyncio.create_task(batcher.submit(["x", "y"], timeout_ms=1_000))
    survivor = asyncio.create_task(batcher.submit(["b"]))
    await settle()
    offset = 2.0
    assert handler.gate is not None
    handler.gate.set()
    assert await running == [("ok", "a")] and await survivor == [("ok", "b")]
    with pytest.raises(DeadlineExceeded, match="1000 ms"):
        await doomed
    assert handler.batches == [["a"], ["b"]]
    assert metric("predictor_expired_total") - expired0 == 2
    await batcher.close()


@async_test
async def test_deadline_already_passed_is_rejected_without_queueing() -> None:
    batcher = make(Handler())
    with pytest.raises(DeadlineExceeded, match="0 ms had passed before it was queued"):
        await batcher.submit([0], timeout_ms=0)
    assert batcher.queue_depth == 0
    await batcher.close()


# --- failures --------------------------------------------------------------------------


@async_test
async def test_failing_item_fails_only_its_own_request() -> None:
    handler = Handler(fail_on="bad")
    batcher = make(handler, max_batch_size=8, max_latency_ms=20)
    results = await asyncio.gather(
        batcher.submit(["a"]),
        batcher.submit(["b", "bad", "c"]),
        batcher.submit(["d"]),
        return_exceptions=True,
    )
    assert handler.batches == [["a", "b", "bad", "c", "d"]]
    assert results[0] == [("ok", "a")] and results[2] == [("ok", "d")]
    assert isinstance(results[1], ValueError) and "bad item 'bad'" in str(results[1])
    await batcher.close()


@async_test
async def test_handler_that_raises_fails_its_whole_batch_only() -> None:
    calls = 0

    async def handler(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("device fell over")
        return [x * 10 for x in items]

    batcher = make(handler, max_batch_size=2)
    results = await asyncio.gather(batcher.submit([1]), batcher.submit([2]), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and str(r) == "device fell over" for r in results)
    assert await asyncio.gather(batcher.submit([3]), batcher.submit([4])) == [[30], [40]]
    await batcher.close()


@async_test
async def test_wrong_number_of_results_is_a_contract_error_for_every_request() -> None:
    async def handler(items: list[int]) -> list[int]:
        return items[:-1]

    batcher = make(handler, max_batch_size=3)
    results = await asyncio.gather(batcher.submit([1]), batcher.submit([2, 3]), return_exceptions=True)
    for r in results:
        assert isinstance(r, RuntimeError)
        assert "returned 2 results for a batch of 3 items" in str(r)
    await batcher.close()


# --- cancellation ------------------------------------------------------------------------


@async_test
async def test_cancelled_submit_frees_its_queue_slots_at_once() -> None:
    handler = Handler(gated=True)
    batcher = make(handler, max_batch_size=4, max_latency_ms=0, max_concurrent_batches=1)
    depth0 = metric("predictor_queue_depth")
    running = asyncio.create_task(batcher.submit(["a"]))
    await settle()
    gone = asyncio.create_task(batcher.submit(["x", "y", "z"]))
    stays = asyncio.create_task(batcher.submit(["b"]))
    await settle()
    assert batcher.queue_depth == 4

    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert gone.cancelled()
    assert batcher.queue_depth == 1
    assert metric("predictor_queue_depth") - depth0 == 1

    assert handler.gate is not None
    handler.gate.set()
    assert await running == [("ok", "a")] and await stays == [("ok", "b")]
    assert handler.batches == [["a"], ["b"]]
    await batcher.close()
    assert metric("predictor_queue_depth") == depth0


@async_test
async def test_cancelled_submit_with_dispatched_items_discards_results_silently() -> None:
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    handler = Handler(gated=True, fail_on="x")
    batcher = make(handler, max_batch_size=2, max_latency_ms=0, max_concurrent_batches=1)
    gone = asyncio.create_task(batcher.submit(["x", "y", "z"]))  # x, y dispatched; z queued
    await settle()
    assert handler.batches == [["x", "y"]] and batcher.queue_depth == 1
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert batcher.queue_depth == 0
    assert handler.gate is not None
    handler.gate.set()  # the handler now returns an exception for "x": nobody is listening
    assert await batcher.submit(["b"]) == [("ok", "b")]
    await batcher.close()
    del gone
    gc.collect()
    await settle()
    assert handler.seen == ["x", "y", "b"]
    assert loop_errors == []


# --- concurrency -------------------------------------------------------------------------


@async_test
async def test_next_batch_dispatches_while_the_first_runs_but_never_more_than_the_limit() -> None:
    handler = Handler(gated=True)
    batcher = make(handler, max_batch_size=2, max_latency_ms=0, max_concurrent_batches=2)
    inflight0 = metric("predictor_inflight_batches")
    tasks = [asyncio.create_task(batcher.submit([i])) for i in range(7)]
    await settle()
    assert handler.batches == [[0, 1], [2, 3]]
    assert handler.active == 2 and batcher.inflight_batches == 2
    assert metric("predictor_inflight_batches") - inflight0 == 2
    assert batcher.queue_depth == 3
    assert handler.gate is not None
    handler.gate.set()
    assert await asyncio.gather(*tasks) == [[("ok", i)] for i in range(7)]
    assert handler.max_active == 2
    assert batcher.inflight_batches == 0 and metric("predictor_inflight_batches") == inflight0
    await batcher.close()


# --- shutdown ------------------------------------------------------------------------------


@async_test
async def test_close_finishes_queued_and_inflight_work_then_rejects_new_requests() -> None:
    handler = Handler(gated=True)
    batcher = make(handler, max_batch_size=2, max_latency_ms=LONG_MS, max_concurrent_batches=1)
    start = time.monotonic()
    inflight = asyncio.create_task(batcher.submit([0, 1]))  # full: dispatched at once
    queued = asyncio.create_task(batcher.submit([2]))  # partial, would wait LONG_MS
    await settle()
    assert batcher.inflight_batches == 1 and batcher.queue_depth == 1

    closing = asyncio.create_task(batcher.close())
    await settle()
    with pytest.raises(ServerBusy, match="shutting down"):
        await batcher.submit([3])
    done, _ = await asyncio.wait({closing}, timeout=0.05)
    assert not done

    assert handler.gate is not None
    handler.gate.set()
    await closing
    assert inflight.result() == [("ok", 0), ("ok", 1)] and queued.result() == [("ok", 2)]
    assert time.monotonic() - start < 1.0  # the partial batch was flushed, not held
    assert batcher.inflight_batches == 0 and batcher.queue_depth == 0
    with pytest.raises(ServerBusy):
        await batcher.submit([4])


def test_batcher_created_outside_a_loop_starts_on_first_submit() -> None:
    handler = Handler()
    batcher = make(handler, max_batch_size=1)

    async def main() -> list[Any]:
        result = await batcher.submit([1])
        await batcher.close()
        return result

    assert asyncio.run(main()) == [("ok", 1)]


# --- metrics ---------------------------------------------------------------------------------


@async_test
async def test_batch_size_and_queue_wait_are_observed_per_batch_and_per_image() -> None:
    batches0, images0 = metric("predictor_batch_size_count"), metric("predictor_batch_size_sum")
    waits0 = metric("predictor_queue_wait_seconds_count")
    batcher = make(Handler(), max_batch_size=4, max_latency_ms=1)
    await batcher.submit(list(range(6)))
    await batcher.close()
    assert metric("predictor_batch_size_count") - batches0 == 2
    assert metric("predictor_batch_size_sum") - images0 == 6
    assert metric("predictor_queue_wait_seconds_count") - waits0 == 6


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1"),
        ({"max_batch_size": 2.0}, "max_batch_size must be an integer >= 1"),
        ({"max_batch_size": True}, "max_batch_size must be an integer >= 1"),
        ({"max_latency_ms": -1}, "max_latency_ms must be a number >= 0"),
        ({"max_latency_ms": "5"}, "max_latency_ms must be a number >= 0"),
        ({"max_latency_ms": float("nan")}, "max_latency_ms must be a number >= 0"),
        ({"max_queue_size": 3}, r"max_queue_size must be an integer >= max_batch_size \(4\)"),
        ({"max_queue_size": 8.0}, r"max_queue_size must be an integer >= max_batch_size \(4\)"),
        ({"request_timeout_ms": 0}, "request_timeout_ms must be None or a number > 0"),
        ({"request_timeout_ms": -5.0}, "request_timeout_ms must be None or a number > 0"),
        ({"max_concurrent_batches": 0}, "max_concurrent_batches must be an integer >= 1"),
    ],
)
def test_config_rules_are_stated(overrides: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = dict(
        max_batch_size=4, max_latency_ms=LONG_MS, max_queue_size=16, request_timeout_ms=None
    )
    with pytest.raises(ValueError, match=message):
        BatchingConfig(**{**settings, **overrides})
