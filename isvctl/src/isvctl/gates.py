"""Canary gates: is the new model healthy enough to take more traffic?

A gate is checked every GATE_INTERVAL_S during the bake, over the last interval. Readiness comes
first, read from what the controllers report about the new model's pods (a revision, a canary's
Deployment, the new pods of a rolling replace). With PROMETHEUS_URL the gate then reads the
predictor's own metrics for those pods only; a query that fails or cannot reach Prometheus fails
the gate, because an unreadable canary is not a healthy one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .clock import Clock
from .errors import DeployError
from .observe import Observation
from .progress import Phase, Progress


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


@dataclass(frozen=True)
class Subject:
    """The new model's pods, as the gate reads them."""

    what: str  # "revision image-classifier-predictor-00002"
    matchers: str  # PromQL label matchers beyond namespace and isvc, e.g. 'revision="..."'
    readiness: Callable[[Observation], Progress]


class Gate(Protocol):
    def describe(self) -> str: ...

    def check(self, obs: Observation, subject: Subject, window_s: float) -> Verdict: ...


def _selector(obs: Observation, subject: Subject) -> str:
    # The predictor labels its series with model_name, and the runtime serves the model under the
    # InferenceService's name: KServe fills --model_name={{.Name}} from the InferenceService's metadata
    # (ReplacePlaceholders, pkg/controller/v1beta1/inferenceservice/utils/utils.go), for a canary from
    # a copy of it (reconcileCanaryDeployments, .../inferenceservice/components/predictor.go).
    labels = [f'namespace="{obs.isvc.namespace}"', f'isvc="{obs.isvc.name}"', f'model_name="{obs.isvc.name}"']
    if subject.matchers:
        labels.append(subject.matchers)
    return ", ".join(labels)


def window(window_s: float) -> str:
    # A rate needs at least two scrapes (15 s interval) to say anything.
    return f"{max(int(math.ceil(window_s)), 60)}s"


def error_ratio_query(selector: str, window_s: float) -> str:
    w = window(window_s)
    # Server faults only: "invalid" is the client's fault, "busy" is load shedding that the
    # autoscaler, not a rollback, should answer.
    return (
        f'sum(rate(predictor_requests_total{{{selector}, status=~"error|timeout"}}[{w}]))'
        f" / sum(rate(predictor_requests_total{{{selector}}}[{w}]))"
    )


def p99_latency_query(selector: str, window_s: float) -> str:
    return (
        f"histogram_quantile(0.99, sum by (le) "
        f"(rate(predictor_request_seconds_bucket{{{selector}}}[{window(window_s)}])))"
    )


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

    def check(self, obs: Observation, subject: Subject, window_s: float) -> Verdict:
        progress = subject.readiness(obs)
        if progress.phase is not Phase.DONE:
            return Verdict(False, f"{subject.what} is not ready: {progress.detail}")
        return Verdict(True, f"{subject.what} ready")


class PrometheusGate:
    def __init__(self, source: MetricsSource, limits: Thresholds):
        self._source = source
        self._limits = limits
        self._readiness = ReadinessGate()

    def describe(self) -> str:
        return (
            f"readiness, error ratio <= {self._limits.max_error_ratio} and "
            f"p99 <= {self._limits.max_p99_latency_s * 1000:.0f} ms (Prometheus)"
        )

    def check(self, obs: Observation, subject: Subject, window_s: float) -> Verdict:
        ready = self._readiness.check(obs, subject, window_s)
        if not ready.passed:
            return ready
        selector = _selector(obs, subject)
        try:
            error_ratio = self._source.query(error_ratio_query(selector, window_s))
            p99_s = self._source.query(p99_latency_query(selector, window_s))
        except DeployError as exc:
            return Verdict(False, f"cannot read the canary's metrics: {exc}")
        return judge(error_ratio, p99_s, self._limits)


def bake(
    clock: Clock, say: Callable[[str], None], bake_time_s: float, interval_s: float, check: Callable[[], Verdict]
) -> str | None:
    """Gate every interval until the bake is over; the first failing window's summary, else None."""
    remaining_s = bake_time_s
    while remaining_s > 0:
        step_s = min(interval_s, remaining_s)
        clock.sleep(step_s)
        remaining_s -= step_s
        verdict = check()
        if not verdict.passed:
            say(f"  gate FAILED with {remaining_s:.0f} s of the bake left: {verdict.summary}")
            return verdict.summary
        say(f"  baking, {remaining_s:.0f} s left: {verdict.summary}")
    return None
