"""The transformer's Prometheus metrics, under names of its own, labelled with `model_name` like
the predictor's.

A transformer pod is scraped beside the predictor's (same InferenceService label); distinct names
keep every sum a canary gate, a KEDA trigger or the dashboard takes over `predictor_*` about the
predictor alone. The predictor's metrics, which this process never updates, are unregistered.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from .. import metrics as predictor_metrics
from ..batching import QueueMetrics
from ..metrics import MODEL_LABEL, STATUSES, ModelMetric, RequestMetrics

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = RequestMetrics(
    requests=ModelMetric(
        Counter("transformer_requests_total", "Inference requests by outcome", [MODEL_LABEL, "status"]), STATUSES
    ),
    request_seconds=ModelMetric(
        Histogram(
            "transformer_request_seconds",
            "End-to-end time of a request inside the transformer, by outcome",
            [MODEL_LABEL, "status"],
            buckets=_SECONDS_BUCKETS,
        ),
        STATUSES,
    ),
    inflight_requests=ModelMetric(
        Gauge(
            "transformer_inflight_requests",
            "Requests being served right now",
            [MODEL_LABEL],
            multiprocess_mode="livesum",
        )
    ),
    last_request_timestamp_seconds=ModelMetric(
        Gauge(
            "transformer_last_request_timestamp_seconds",
            "Unix time the last request finished",
            [MODEL_LABEL],
            multiprocess_mode="max",
        )
    ),
)
PREPARE_SECONDS = ModelMetric(
    Histogram(
        "transformer_prepare_seconds",
        "CPU time to decode, resize and crop the images of one request",
        [MODEL_LABEL],
        buckets=_SECONDS_BUCKETS,
    )
)
PREDICTOR_CALL_SECONDS = ModelMetric(
    Histogram(
        "transformer_predictor_call_seconds",
        "One multi-image call to the predictor over gRPC, by its status code",
        [MODEL_LABEL, "code"],
        buckets=_SECONDS_BUCKETS,
    ),
    ("OK",),
)
QUEUE = QueueMetrics(
    batch_size=ModelMetric(
        Histogram(
            "transformer_batch_size",
            "Images per predictor call (coalesced from requests)",
            [MODEL_LABEL],
            buckets=_BATCH_BUCKETS,
        )
    ),
    queue_wait_seconds=ModelMetric(
        Histogram(
            "transformer_queue_wait_seconds",
            "Time an image waited for companions before its predictor call",
            [MODEL_LABEL],
            buckets=_SECONDS_BUCKETS,
        )
    ),
    queue_depth=ModelMetric(
        Gauge(
            "transformer_queue_depth",
            "Images waiting to be sent to the predictor",
            [MODEL_LABEL],
            multiprocess_mode="livesum",
        )
    ),
    inflight_batches=ModelMetric(
        Gauge(
            "transformer_inflight_calls",
            "Predictor calls between send and answer",
            [MODEL_LABEL],
            multiprocess_mode="livesum",
        )
    ),
    rejected=ModelMetric(
        Counter("transformer_rejected_total", "Requests rejected at once because the queue was full", [MODEL_LABEL])
    ),
    expired=ModelMetric(
        Counter(
            "transformer_expired_total", "Images dropped before their call because the deadline passed", [MODEL_LABEL]
        )
    ),
)


def unregister_predictor_metrics() -> None:
    """The predictor's series would read as zeros from a transformer pod: leave them out."""
    for value in vars(predictor_metrics).values():
        if isinstance(value, ModelMetric):
            try:
                REGISTRY.unregister(value.family)
            except KeyError:  # already gone
                pass
