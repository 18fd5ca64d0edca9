"""One closed-loop step: N clients send one request each, back to back, for a warm-up (not
measured) and then a measured window, in this process or spread over several."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import resource
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np
import psutil

from ..metrics import Metrics
from .clients import ClientSpec, build_client

Sender = Callable[[], Awaitable[str]]  # one request; returns "ok" or an error key


@dataclass(frozen=True)
class StepPlan:
    concurrency: int
    warmup_s: float
    duration_s: float
    max_requests: int  # the window closes early once this many are sent


@dataclass(frozen=True)
class Probes:
    """What a step reads at its window's edges."""

    metrics: Callable[[], Awaitable[Metrics | None]]  # the server's /metrics
    server_cpu_s: Callable[[], float | None]  # the server's CPU seconds so far


class CpuSplit(TypedDict):
    """CPU seconds in a window: the server's (None when it cannot be read), this load generator's,
    and every other process's (None with the server's)."""

    server: float | None
    client: float
    other: float | None


@dataclass
class Window:
    """What one step measured."""

    seconds: float
    latencies_ms: list[float]  # of the requests answered ok inside the window
    errors: Counter[str]  # by key, over the whole step (warm-up and drain included)
    before: Metrics | None
    after: Metrics | None
    cpu_s: CpuSplit


def latency_summary(latencies_ms: list[float]) -> dict[str, float | None]:
    if not latencies_ms:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    p50, p90, p99 = np.percentile(latencies_ms, [50, 90, 99])
    return {
        "p50": round(float(p50), 2),
        "p90": round(float(p90), 2),
        "p99": round(float(p99), 2),
        "mean": round(statistics.fmean(latencies_ms), 2),
    }


def _client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine_busy_cpu_s() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


@dataclass
class _StepState:
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (finished_at, latency_s) of oks
    errors: Counter[str] = field(default_factory=Counter)

    def latencies_ms(self, start: float, end: float) -> list[float]:
        return [lat * 1000 for finished, lat in self.latencies if start <= finished <= end]


async def _client_loop(send: Sender, state: _StepState, max_requests: int) -> None:
    while not state.stop.is_set():
        state.sent += 1
        if state.sent >= max_requests:
            state.stop.set()
        started = time.perf_counter()
        status = await send()
        finished = time.perf_counter()
        if status == "ok":
            state.latencies.append((finished, finished - started))
        else:
            state.errors[status] += 1


async def run_step(send: Sender, plan: StepPlan, probes: Probes) -> Window:
    """Closed loop in this process: measured from the end of warm-up until duration_s passes or
    max_requests are sent."""
    state = _StepState()
    clients = [asyncio.create_task(_client_loop(send, state, plan.max_requests)) for _ in range(plan.concurrency)]
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(state.stop.wait(), plan.warmup_s)
    window_start = time.perf_counter()
    before = await probes.metrics()
    cpu_before = (probes.server_cpu_s(), _client_cpu_s(), _machine_busy_cpu_s())
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(state.stop.wait(), plan.duration_s)
    window_end = time.perf_counter()
    after = await probes.metrics()
    cpu_after = (probes.server_cpu_s(), _client_cpu_s(), _machine_busy_cpu_s())
    state.stop.set()
    await asyncio.gather(*clients)  # in-flight requests finish (bounded by the request timeout), unmeasured
    return Window(
        window_end - window_start,
        state.latencies_ms(window_start, window_end),
        state.errors,
        before,
        after,
        _cpu_split(cpu_before, cpu_after),
    )


def client_pool(processes: int) -> ProcessPoolExecutor | None:
    if processes <= 1:
        return None
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
    # Start them all and import the client libraries now (seconds on a busy machine), not
    # inside a step's start-up margin.
    for f in [pool.submit(_import_client_libraries) for _ in range(processes)]:
        f.result()
    return pool


def _import_client_libraries() -> None:
    import grpc  # noqa: F401

    time.sleep(0.2)  # hold this process so the next task goes to another one


async def run_step_in_processes(
    pool: ProcessPoolExecutor, spec: ClientSpec, processes: int, plan: StepPlan, probes: Probes
) -> Window:
    """run_step with the clients spread over `processes` processes, for rates one Python client
    process cannot generate. All share one wall-clock window; the window is fixed at duration_s
    (a process that reaches its share of max_requests stops sending early)."""
    loop = asyncio.get_running_loop()
    start_at = time.time() + 1.0  # every process has its clients built before any load
    window_start, window_end = start_at + plan.warmup_s, start_at + plan.warmup_s + plan.duration_s
    shares = [plan.concurrency // processes + (i < plan.concurrency % processes) for i in range(processes)]
    futures = [
        loop.run_in_executor(
            pool,
            _client_process,
            spec.share(processes),
            share,
            (start_at, window_start, window_end),
            max(1, plan.max_requests // processes),
        )
        for share in shares
    ]
    await asyncio.sleep(max(0.0, window_start - time.time()))
    before = await probes.metrics()
    server_before, machine_before = probes.server_cpu_s(), _machine_busy_cpu_s()
    await asyncio.sleep(max(0.0, window_end - time.time()))
    after = await probes.metrics()
    server_after, machine_after = probes.server_cpu_s(), _machine_busy_cpu_s()
    results = await asyncio.gather(*futures)
    late_s = max(r["late_s"] for r in results)
    if late_s > 0:
        raise RuntimeError(
            f"a client process started {late_s:.2f} s after the measured window opened; raise --warmup_s"
        )
    latencies_ms = [lat for r in results for lat in r["latencies_ms"]]
    errors: Counter[str] = sum((Counter[str](r["errors"]) for r in results), Counter())
    client_cpu_s = sum(r["cpu_s"] for r in results)
    cpu = _cpu_split((server_before, 0.0, machine_before), (server_after, client_cpu_s, machine_after))
    return Window(plan.duration_s, latencies_ms, errors, before, after, cpu)


def _client_process(
    spec: ClientSpec, concurrency: int, times: tuple[float, float, float], max_requests: int
) -> dict[str, Any]:
    """One client process's share of a step (runs in a pool process); times are (start, window start, window end)."""
    return asyncio.run(_client_process_step(spec, concurrency, times, max_requests))


async def _client_process_step(
    spec: ClientSpec, concurrency: int, times: tuple[float, float, float], max_requests: int
) -> dict[str, Any]:
    start_at, window_start, window_end = times
    client = build_client(spec)
    state = _StepState()
    late_s = max(0.0, time.time() - window_start)
    try:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        loops = [asyncio.create_task(_client_loop(client.send, state, max_requests)) for _ in range(concurrency)]
        await asyncio.sleep(max(0.0, window_start - time.time()))
        measured_from, cpu_before = time.perf_counter(), _client_cpu_s()
        await asyncio.sleep(max(0.0, window_end - time.time()))
        measured_to, cpu_after = time.perf_counter(), _client_cpu_s()
        state.stop.set()
        await asyncio.gather(*loops)
    finally:
        await client.close()
    return {
        "latencies_ms": state.latencies_ms(measured_from, measured_to),
        "errors": dict(state.errors),
        "cpu_s": cpu_after - cpu_before,
        "late_s": late_s,
    }


def _cpu_split(before: tuple[float | None, float, float], after: tuple[float | None, float, float]) -> CpuSplit:
    server = after[0] - before[0] if after[0] is not None and before[0] is not None else None
    client, machine = after[1] - before[1], after[2] - before[2]
    other = machine - client - server if server is not None else None
    return {"server": _round(server), "client": round(client, 2), "other": _round(other)}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)
