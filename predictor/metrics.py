"""Prometheus metrics of the predictor, served on /metrics beside KServe's own.

The names are an interface: KEDA scalers and canary gates query them (see README).
Under `--workers N` every worker writes its values to PROMETHEUS_MULTIPROC_DIR and any
worker's /metrics serves the sum over all of them, so a scrape that lands on one worker
still sees the whole pod.
"""

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_SECONDS_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

BATCH_SIZE = Histogram("predictor_batch_size", "Images per device batch", buckets=_BATCH_BUCKETS)
QUEUE_WAIT_SECONDS = Histogram(
    "predictor_queue_wait_seconds",
    "Time an image waited in the batching queue before its batch was dispatched",
    buckets=_SECONDS_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "predictor_stage_seconds",
    "Time per batch spent in each pipeline stage",
    ["stage"],  # decode | preprocess | inference | postprocess
    buckets=_SECONDS_BUCKETS,
)
REQUEST_SECONDS = Histogram(
    "predictor_request_seconds",
    "End-to-end time of an inference request inside the predictor",
    buckets=_SECONDS_BUCKETS,
)
REQUESTS = Counter(
    "predictor_requests_total",
    "Inference requests by outcome",
    ["status"],  # ok | invalid | busy | timeout | error
)
QUEUE_DEPTH = Gauge("predictor_queue_depth", "Images waiting in the batching queue", multiprocess_mode="livesum")
INFLIGHT_REQUESTS = Gauge(
    "predictor_inflight_requests", "Inference requests being served right now", multiprocess_mode="livesum"
)
INFLIGHT_BATCHES = Gauge(
    "predictor_inflight_batches", "Batches between dispatch and completion", multiprocess_mode="livesum"
)
REJECTED = Counter("predictor_rejected_total", "Requests rejected at once because the queue was full")
EXPIRED = Counter(
    "predictor_expired_total",
    "Images dropped before any device work because their request's deadline passed",
)
OOM_SPLITS = Counter("predictor_oom_splits_total", "Batches split and retried after device out-of-memory")
DEVICE_MEMORY_BYTES = Gauge(
    "predictor_device_memory_bytes",
    "Device memory allocated by the model (summed over workers, which share the device)",
    multiprocess_mode="livesum",
)


def scrape_registry() -> CollectorRegistry:
    """What /metrics serves: this process's registry, or every live worker's under --workers."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return registry
