"""The transformer's Prometheus metrics, under names of its own, labelled with `model_name` like
the predictor's.

A transformer pod is scraped beside the predictor's (same InferenceService label); distinct names
keep every sum a canary gate, a KEDA trigger or the dashboard takes over `predictor_*` about the
predictor alone. The predictor's metrics, which this process never updates, are unregistered.
"""

from __future__ import annotations

from prometheus_client import REGISTRY

from .. import metrics as predictor_metrics
from ..batching import QueueMetrics
from ..metrics import BATCH_BUCKETS, STATUSES, ModelMetric, RequestMetrics, counter, gauge, histogram
from ..triton import StatisticsSeries

REQUESTS = RequestMetrics(
    requests=counter("transformer_requests_total", "Inference requests by outcome", "status", STATUSES),
    request_seconds=histogram(
        "transformer_request_seconds",
        "End-to-end time of a request inside the transformer, by outcome",
        label="status",
        values=STATUSES,
    ),
    inflight_requests=gauge("transformer_inflight_requests", "Requests being served right now"),
    last_request_timestamp_seconds=gauge(
        "transformer_last_request_timestamp_seconds", "Unix time the last request finished", "max"
    ),
)
PREPARE_SECONDS = histogram(
    "transformer_prepare_seconds", "CPU time to decode, resize and crop the images of one request"
)
PREDICTOR_CALL_SECONDS = histogram(
    "transformer_predictor_call_seconds",
    "One multi-image call to the predictor over gRPC, by its status code",
    label="code",
    values=("OK",),
)
QUEUE = QueueMetrics(
    batch_size=histogram(
        "transformer_batch_size", "Images per predictor call (coalesced from requests)", BATCH_BUCKETS
    ),
    queue_wait_seconds=histogram(
        "transformer_queue_wait_seconds", "Time an image waited for companions before its predictor call"
    ),
    queue_depth=gauge("transformer_queue_depth", "Images waiting to be sent to the predictor"),
    inflight_batches=gauge("transformer_inflight_calls", "Predictor calls between send and answer"),
    rejected=counter("transformer_rejected_total", "Requests rejected at once because the queue was full"),
    expired=counter("transformer_expired_total", "Images dropped before their call because the deadline passed"),
)


# Triton's statistics of a transformer: preparing the crops is its input stage, the predictor calls
# its inference; it has no output stage of its own.
STATISTICS = StatisticsSeries(
    "transformer",
    compute_input=(("prepare_seconds", {}),),
    compute_infer=(("predictor_call_seconds", {}),),
    compute_output=(),
)


def unregister_predictor_metrics() -> None:
    """The predictor's series would read as zeros from a transformer pod: leave them out."""
    for value in vars(predictor_metrics).values():
        if isinstance(value, ModelMetric):
            try:
                REGISTRY.unregister(value.family)
            except KeyError:  # already gone
                pass
