"""Canary gates: is the new revision healthy enough to take more traffic?

With PROMETHEUS_URL the gate reads the predictor's own metrics (error ratio, p99 latency) over the
bake window; without it, readiness is the only evidence and the gate says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from .isvc import State


@dataclass(frozen=True)
class Thresholds:
    max_error_ratio: float = 0.01
    max_p99_latency_s: float = 0.5


@dataclass(frozen=True)
class Verdict:
    passed: bool
    summary: str


class MetricsSource(Protocol):
    def query(self, promql: str) -> float | None:
        """The scalar value of an instant query, or None when there are no samples."""


class Gate(Protocol):
    def describe(self) -> str: ...

    def check(self, state: State, revision: str | None, window_s: float) -> Verdict: ...


def _selector(state: State, revision: str | None) -> str:
    labels = [f'namespace="{state.namespace}"', f'isvc="{state.name}"']
    if revision:
        labels.append(f'revision="{revision}"')
    return ", ".join(labels)


def _window(window_s: float) -> str:
    # A rate needs at least two scrapes (15 s interval) to say anything.
    return f"{max(int(math.ceil(window_s)), 60)}s"


def error_ratio_query(state: State, revision: str | None, window_s: float) -> str:
    sel, w = _selector(state, revision), _window(window_s)
    # Server faults only: "invalid" is the client's fault, "busy" is load shedding that the
    # autoscaler, not a rollback, should answer.
    return (
        f'sum(rate(predictor_requests_total{{{sel}, status=~"error|timeout"}}[{w}]))'
        f" / sum(rate(predictor_requests_total{{{sel}}}[{w}]))"
    )


def p99_latency_query(state: State, revision: str | None, window_s: float) -> str:
    sel, w = _selector(state, revision), _window(window_s)
    return f"histogram_quantile(0.99, sum by (le) (rate(predictor_request_seconds_bucket{{{sel}}}[{w}])))"


def judge(error_ratio: float | None, p99_s: float | None, limits: Thresholds) -> Verdict:
    if error_ratio is None and p99_s is None:
        # Nothing to judge by (no requests reached the canary); readiness was already checked.
        return Verdict(True, "no requests in the window: gated on readiness only")
    failures, facts = [], []
    if error_ratio is not None:
        facts.append(f"error ratio {error_ratio:.4f} (max {limits.max_error_ratio:.4f})")
        if error_ratio > limits.max_error_ratio:
            failures.append(facts[-1])
    if p99_s is not None:
        facts.append(f"p99 {p99_s * 1000:.0f} ms (max {limits.max_p99_latency_s * 1000:.0f} ms)")
        if p99_s > limits.max_p99_latency_s:
            failures.append(facts[-1])
    if failures:
        return Verdict(False, "; ".join(failures))
    return Verdict(True, "; ".join(facts))


class ReadinessGate:
    def describe(self) -> str:
        return "readiness (PROMETHEUS_URL not set)"

    def check(self, state: State, revision: str | None, window_s: float) -> Verdict:
        if not state.ready:
            cond = state.conditions.get("Ready")
            why = f": {cond.reason} {cond.message}".rstrip() if cond else ""
            return Verdict(False, f"InferenceService not Ready{why}")
        if revision and state.latest_ready != revision:
            return Verdict(False, f"revision {revision} is no longer the latest ready one")
        return Verdict(True, "ready")


class PrometheusGate:
    def __init__(self, source: MetricsSource, limits: Thresholds, readiness: ReadinessGate | None = None):
        self._source = source
        self._limits = limits
        self._readiness = readiness or ReadinessGate()

    def describe(self) -> str:
        return (
            f"error ratio <= {self._limits.max_error_ratio} and "
            f"p99 <= {self._limits.max_p99_latency_s * 1000:.0f} ms (Prometheus)"
        )

    def check(self, state: State, revision: str | None, window_s: float) -> Verdict:
        ready = self._readiness.check(state, revision, window_s)
        if not ready.passed:
            return ready
        return judge(
            self._source.query(error_ratio_query(state, revision, window_s)),
            self._source.query(p99_latency_query(state, revision, window_s)),
            self._limits,
        )
