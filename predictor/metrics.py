"""Prometheus metrics of the predictor, served on /metrics beside KServe's own.

The names are an interface: KEDA scalers, canary gates and the dashboard query them (see
README). Every `predictor_*` series carries `model_name`, as KServe's own `request_*_seconds`
do, so one Prometheus tells two models apart. One process serves one model: `bind_model` names
it once, and the call sites (batcher, engine, model) use the metrics below as if unlabelled.

Under `--workers N` every worker writes its values to PROMETHEUS_MULTIPROC_DIR and any
worker's /metrics serves the sum over all of them, so a scrape that lands on one worker
still sees the whole pod.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.metrics import MetricWrapperBase

MODEL_LABEL = "model_name"

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# The values of the other labels, each series exposed from the start (at 0): a rate over a
# series that appears only at its first event reads "no data", not 0, in dashboards and KEDA.
STATUSES = ("ok", "invalid", "busy", "timeout", "error")  # predictor.errors' outcome labels
STAGES = ("decode", "preprocess", "inference", "postprocess")

_ALL: list[ModelMetric] = []


class ModelMetric:
    """A metric family labelled with the served model's name first. `labels(...)` takes the
    family's other labels; `inc`, `dec`, `set` and `observe` act on the series without any.
    Every instance, here or in another role's metrics module, is bound by `bind_model`."""

    def __init__(self, family: MetricWrapperBase, values: tuple[str, ...] = ()) -> None:
        self.family = family
        self._values = values
        self._children: dict[tuple[str, ...], Any] = {}
        _ALL.append(self)

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.family.labels(_served_model, *values)
        return child

    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self.labels().dec(amount)

    def set(self, value: float) -> None:
        self.labels().set(value)

    def observe(self, value: float) -> None:
        self.labels().observe(value)

    def _bind(self) -> None:
        self._children.clear()
        for value in self._values or [None]:
            self.labels(*([] if value is None else [value]))


def counter(name: str, documentation: str, label: str | None = None, values: tuple[str, ...] = ()) -> ModelMetric:
    """A counter labelled `model_name` (and `label`, whose `values` are exposed from the start)."""
    return ModelMetric(Counter(name, documentation, _label_names(label)), values)


def gauge(name: str, documentation: str, multiprocess_mode: Literal["livesum", "max"] = "livesum") -> ModelMetric:
    """A gauge labelled `model_name`; under --workers, live workers' values are summed unless told otherwise."""
    return ModelMetric(Gauge(name, documentation, [MODEL_LABEL], multiprocess_mode=multiprocess_mode))


def histogram(
    name: str,
    documentation: str,
    buckets: tuple[float, ...] = SECONDS_BUCKETS,
    label: str | None = None,
    values: tuple[str, ...] = (),
) -> ModelMetric:
    """A histogram labelled `model_name` (and `label`, whose `values` are exposed from the start)."""
    return ModelMetric(Histogram(name, documentation, _label_names(label), buckets=buckets), values)


def _label_names(label: str | None) -> list[str]:
    return [MODEL_LABEL] if label is None else [MODEL_LABEL, label]


BATCH_SIZE = histogram("predictor_batch_size", "Images per device batch", BATCH_BUCKETS)
QUEUE_WAIT_SECONDS = histogram(
    "predictor_queue_wait_seconds", "Time an image waited in the batching queue before its batch was dispatched"
)
STAGE_SECONDS = histogram(
    "predictor_stage_seconds", "Time per batch spent in each pipeline stage", label="stage", values=STAGES
)
REQUEST_SECONDS = histogram(
    "predictor_request_seconds",
    "End-to-end time of an inference request inside the predictor, by outcome",
    label="status",
    values=STATUSES,
)
REQUESTS = counter("predictor_requests_total", "Inference requests by outcome", "status", STATUSES)
LAST_REQUEST_TIMESTAMP_SECONDS = gauge(
    "predictor_last_request_timestamp_seconds", "Unix time the last inference request finished", "max"
)
QUEUE_DEPTH = gauge("predictor_queue_depth", "Images waiting in the batching queue")
INFLIGHT_REQUESTS = gauge("predictor_inflight_requests", "Inference requests being served right now")
INFLIGHT_BATCHES = gauge("predictor_inflight_batches", "Batches between dispatch and completion")
REJECTED = counter("predictor_rejected_total", "Requests rejected at once because the queue was full")
EXPIRED = counter(
    "predictor_expired_total", "Images dropped before any device work because their request's deadline passed"
)
OOM_SPLITS = counter("predictor_oom_splits_total", "Batches split and retried after device out-of-memory")
DEVICE_MEMORY_BYTES = gauge(
    "predictor_device_memory_bytes",
    "Device memory allocated by the model (summed over workers, which share the device)",
)


@dataclass(frozen=True)
class RequestMetrics:
    """Where a role's request path (`model.ImageModel`) counts each request's outcome."""

    requests: ModelMetric
    request_seconds: ModelMetric
    inflight_requests: ModelMetric
    last_request_timestamp_seconds: ModelMetric


PREDICTOR_REQUEST_METRICS = RequestMetrics(REQUESTS, REQUEST_SECONDS, INFLIGHT_REQUESTS, LAST_REQUEST_TIMESTAMP_SECONDS)

# Until a model is bound (the batcher or engine used on their own, as in their unit tests).
_served_model = ""


def bind_model(name: str) -> None:
    """Label every series of a `ModelMetric` from now on with `model_name=name`: the model this process serves."""
    global _served_model
    _served_model = name
    for metric in _ALL:
        metric._bind()


def served_model() -> str:
    return _served_model


def scrape_registry() -> CollectorRegistry:
    """What /metrics serves: this process's registry, or every live worker's under --workers."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return registry
