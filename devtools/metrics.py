"""The predictor's Prometheus metrics, parsed with `prometheus_client.parser`.

A scrape becomes a `Metrics`: samples by name and labels. Two scrapes subtract (`after - before`)
into what happened between them, which is how the benchmark and the soak run read a window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import overload

import httpx
from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


def _key(name: str, labels: Mapping[str, str]) -> Key:
    return name, tuple(sorted(labels.items()))


@dataclass(frozen=True)
class Metrics:
    samples: Mapping[Key, float]  # in exposition order

    # `name` and `default` are positional-only, so any label name (even "name" or "default") can be matched.
    @overload
    def get(self, name: str, default: float, /, **labels: str) -> float: ...
    @overload
    def get(self, name: str, default: None = None, /, **labels: str) -> float | None: ...
    def get(self, name: str, default: float | None = None, /, **labels: str) -> float | None:
        """The sum of the samples of `name` whose labels include `labels`, as PromQL's `sum(name{labels})`:
        e.g. `get("predictor_requests_total", status="ok")` over every model; `default` where there is none."""
        wanted = set(labels.items())
        values = [v for (n, key_labels), v in self.samples.items() if n == name and wanted <= set(key_labels)]
        return sum(values) if values else default

    def value(self, name: str, **labels: str) -> float:
        """One sample that must be there."""
        value = self.get(name, **labels)
        if value is None:
            raise KeyError(f"no sample {name}{labels or ''} among {len(self.samples)} on /metrics")
        return value

    def buckets(self, histogram: str, **labels: str) -> dict[str, float]:
        """A histogram's cumulative counts by upper bound as exposed ("0.5", ..., "+Inf"), smallest first,
        summed over the series whose labels include `labels`."""
        out: dict[str, float] = {}
        wanted = set(labels.items())
        for (name, key_labels), value in self.samples.items():
            others = dict(key_labels)
            le = others.pop("le", None)
            if name == f"{histogram}_bucket" and le is not None and wanted <= set(others.items()):
                out[le] = out.get(le, 0.0) + value
        return out

    def finite_buckets(self, histogram: str, **labels: str) -> dict[float, float]:
        """`buckets` with numeric bounds, without +Inf."""
        return {float(le): count for le, count in self.buckets(histogram, **labels).items() if math.isfinite(float(le))}

    def __sub__(self, before: Metrics) -> Metrics:
        """What changed since `before`: counters and histograms count the window (gauges subtract too)."""
        return Metrics({key: value - before.samples.get(key, 0.0) for key, value in self.samples.items()})


def parse(text: str) -> Metrics:
    return Metrics(
        {
            _key(sample.name, sample.labels): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
    )


def scrape(base_url: str, timeout_s: float = 10) -> Metrics:
    response = httpx.get(f"{base_url}/metrics", timeout=timeout_s)
    response.raise_for_status()
    return parse(response.text)


async def scrape_async(client: httpx.AsyncClient, base_url: str) -> Metrics | None:
    """None where /metrics cannot be read (a remote server may not expose it where the client is)."""
    try:
        response = await client.get(f"{base_url}/metrics")
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return parse(response.text)
