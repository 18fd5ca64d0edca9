"""Closed-loop load for a fixed time: N workers, each sending the next v1 :predict of a reference
JPEG as soon as the last one answers; and, during the soak phase, the server's memory."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from .. import metrics
from ..photos import CAT_CLASSES

REQUEST_SECONDS = "predictor_request_seconds"


@dataclass
class Phase:
    name: str
    duration_s: float
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    ok_latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    missing_retry_after: int = 0
    wrong_answers: int = 0
    transport_errors: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    server_max_s: float | None = None  # from the server's own histogram: time inside the predictor

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)  # every answered request, whatever its status
        return {
            "duration_s": self.duration_s,
            "wall_s": round(self.wall_s, 2),
            "concurrency": self.concurrency,
            "requests": sum(self.statuses.values()) + sum(self.transport_errors.values()),
            "by_status": {str(k): v for k, v in sorted(self.statuses.items())},
            "transport_errors": dict(self.transport_errors),
            "missing_retry_after": self.missing_retry_after,
            "wrong_answers": self.wrong_answers,
            "answers_per_s": round(len(lat) / self.wall_s, 2) if self.wall_s else 0.0,
            "goodput_rps": round(self.statuses[200] / self.wall_s, 2) if self.wall_s else 0.0,
            "p50_ms": _percentile(lat, 50),
            "p99_ms": _percentile(lat, 99),
            "max_ms": round(lat[-1], 1) if lat else None,
            "ok_max_ms": round(max(self.ok_latencies_ms), 1) if self.ok_latencies_ms else None,
            "server_max_s": self.server_max_s,
        }


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    # Nearest-rank: the value at or below which q% of requests fall.
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return round(sorted_values[rank - 1], 1)


async def _worker(
    client: httpx.AsyncClient, url: str, body: bytes, phase: Phase, stop_at: float, timeout_s: float
) -> None:
    while time.monotonic() < stop_at:
        start = time.perf_counter()
        try:
            r = await client.post(url, content=body, headers={"content-type": "application/json"}, timeout=timeout_s)
        except httpx.HTTPError as e:
            phase.transport_errors[type(e).__name__] += 1
            await asyncio.sleep(0.05)  # a refused connection must not become a busy loop
            continue
        phase.latencies_ms.append((time.perf_counter() - start) * 1000)
        phase.statuses[r.status_code] += 1
        if r.status_code == 200:
            phase.ok_latencies_ms.append(phase.latencies_ms[-1])
            names = r.json()["predictions"][0]["class_names"][:3]
            if not CAT_CLASSES & set(names):
                phase.wrong_answers += 1
        elif r.status_code == 503:
            if not r.headers.get("retry-after"):
                phase.missing_retry_after += 1
            # Honour Retry-After only loosely: the point of the phase is to keep the queue full.
            await asyncio.sleep(0.01)


async def run_phase(url: str, body: bytes, phase: Phase, timeout_s: float) -> Phase:
    limits = httpx.Limits(max_connections=phase.concurrency + 4, max_keepalive_connections=phase.concurrency + 4)
    async with httpx.AsyncClient(limits=limits) as client:
        start = time.monotonic()
        stop_at = start + phase.duration_s
        # Every worker stops issuing at stop_at and finishes its request in flight (bounded by timeout_s),
        # so the next phase starts with the server's queue drained.
        await asyncio.gather(*(_worker(client, url, body, phase, stop_at, timeout_s) for _ in range(phase.concurrency)))
        phase.wall_s = time.monotonic() - start
    return phase


def request_seconds_buckets(base_url: str) -> dict[float, float]:
    """Cumulative counts of the server's request-time histogram, by finite upper bound."""
    return metrics.scrape(base_url).finite_buckets(REQUEST_SECONDS)


def slowest_bucket_s(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The smallest histogram bound that holds every request of the window: the server-side max, rounded up."""
    total = max(after.values()) - max(before.values()) if after else 0
    if total <= 0:
        return None
    return min(le for le in after if after[le] - before.get(le, 0) >= total)


def bucket_at_or_above(bounds: Collection[float], seconds: float) -> float:
    """The histogram bound a request of `seconds` is counted under."""
    return min((le for le in bounds if le >= seconds), default=math.inf)


def _rss(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return None


def _device_memory(base_url: str) -> float | None:
    """The server's own gauge (torch.cuda.memory_allocated); absent or 0 on CPU."""
    try:
        value = metrics.scrape(base_url).get("predictor_device_memory_bytes", 0.0)
    except httpx.HTTPError:
        return None
    return value or None


async def soak_phase(
    url: str, base_url: str, body: bytes, phase: Phase, pid: int | None, timeout_s: float
) -> dict[str, Any]:
    """The soak load, with RSS sampled every ~second; start/end are medians of the first/last few samples,
    so one allocator spike at either edge does not decide the verdict."""
    samples: list[tuple[float, int]] = []
    device: list[float] = []

    async def sample() -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < phase.duration_s:
            rss = _rss(pid)
            if rss is not None:
                samples.append((time.monotonic() - t0, rss))
            d = await asyncio.to_thread(_device_memory, base_url)
            if d is not None:
                device.append(d)
            await asyncio.sleep(min(1.0, phase.duration_s / 10))

    await asyncio.gather(run_phase(url, body, phase, timeout_s), sample())
    rss_end_now = _rss(pid)
    if rss_end_now is not None:
        samples.append((phase.duration_s, rss_end_now))
    memory: dict[str, Any] = {"rss_samples": len(samples)}
    if len(samples) >= 2:
        edge = max(1, len(samples) // 5)
        start = statistics.median(s for _, s in samples[:edge])
        end = statistics.median(s for _, s in samples[-edge:])
        memory.update(
            rss_start_mb=round(start / 2**20, 1),
            rss_end_mb=round(end / 2**20, 1),
            rss_max_mb=round(max(s for _, s in samples) / 2**20, 1),
            rss_growth_pct=round((end - start) / start * 100, 2),
        )
    else:
        memory.update(rss_start_mb=None, rss_end_mb=None, rss_growth_pct=None)
    if len(device) >= 2:
        memory.update(
            device_start_mb=round(device[0] / 2**20, 1),
            device_end_mb=round(device[-1] / 2**20, 1),
            device_growth_pct=round((device[-1] - device[0]) / device[0] * 100, 2),
        )
    else:
        memory.update(device_start_mb="n/a", device_end_mb="n/a", device_growth_pct="n/a")
    return memory
