"""Triton's model configuration and statistics extensions, over REST, so Triton's tools read them.

- `GET /v2/models/{name}/config`: the JSON form of Triton's `ModelConfig` (model_config.proto,
  snake_case field names as Triton writes them): the inputs and outputs, the request and device
  batch limits, the dynamic batcher's delay and queue policy.
- `GET /v2/models/{name}/stats` (and `/v2/models/stats`): Triton's `$stats_model_response`
  (docs/protocol/extension_statistics.md in triton-inference-server/server), read from the
  predictor's own Prometheus metrics, so the figures are the ones on /metrics and, under
  `--workers`, the whole pod's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from .batching import BatchingConfig
from .errors import OUTCOME_OK
from .limits import RequestLimits
from .metrics import MODEL_LABEL

# v2 datatypes -> model_config.proto's DataType names.
_DATA_TYPES = {"BYTES": "TYPE_STRING", "UINT8": "TYPE_UINT8", "FP32": "TYPE_FP32", "INT64": "TYPE_INT64"}
_NS_PER_S = 1e9


def model_config(
    name: str,
    *,
    inputs: Sequence[Mapping[str, Any]],
    outputs: Sequence[Mapping[str, Any]],
    batching: BatchingConfig,
    limits: RequestLimits,
    parameters: Mapping[str, str],
) -> dict[str, Any]:
    """Triton's ModelConfig for a model whose tensors all lead with the batch dimension.

    `max_batch_size` is what one request may carry (max_images_per_request); the batcher's device
    batch is the preferred batch size. Triton's queue counts requests, this one images."""
    queue_policy: dict[str, Any] = {"timeout_action": "REJECT", "max_queue_size": batching.max_queue_size}
    if batching.request_timeout_ms is not None:
        queue_policy["default_timeout_microseconds"] = round(batching.request_timeout_ms * 1000)
    return {
        "name": name,
        "max_batch_size": limits.max_images_per_request,
        "input": [_tensor(spec) for spec in inputs],
        "output": [_tensor(spec) for spec in outputs],
        "dynamic_batching": {
            "preferred_batch_size": [batching.max_batch_size],
            "max_queue_delay_microseconds": round(batching.max_latency_ms * 1000),
            "default_queue_policy": queue_policy,
        },
        "parameters": {key: {"string_value": value} for key, value in parameters.items()},
    }


def _tensor(spec: Mapping[str, Any]) -> dict[str, Any]:
    dims = list(spec["shape"])[1:]  # the batch dimension is implied by max_batch_size > 0
    tensor: dict[str, Any] = {"name": spec["name"], "data_type": _DATA_TYPES[spec["datatype"]]}
    if dims:
        tensor["dims"] = dims
    else:
        # A [N] tensor: Triton writes one element per batch entry and reshapes it away.
        tensor["dims"] = [1]
        tensor["reshape"] = {"shape": []}
    return tensor


@dataclass(frozen=True)
class StatisticsSeries:
    """Where a role's Triton statistics come from: its metric prefix, and the (histogram, labels)
    pairs summed into each compute stage. A stage's count is that of its last pair."""

    prefix: str
    compute_input: tuple[tuple[str, Mapping[str, str]], ...]
    compute_infer: tuple[tuple[str, Mapping[str, str]], ...]
    compute_output: tuple[tuple[str, Mapping[str, str]], ...]


# The predictor: stages per device batch (`compute_input` is decode plus preprocess).
PREDICTOR_SERIES = StatisticsSeries(
    "predictor",
    compute_input=(("stage_seconds", {"stage": "decode"}), ("stage_seconds", {"stage": "preprocess"})),
    compute_infer=(("stage_seconds", {"stage": "inference"}),),
    compute_output=(("stage_seconds", {"stage": "postprocess"}),),
)


def model_statistics(models: Iterable[tuple[str, StatisticsSeries]], registry: CollectorRegistry) -> dict[str, Any]:
    """Triton's statistics response for the models named, each from its role's metrics.

    Durations are what the metrics measure: `success` and `fail` per request end to end,
    `queue` per image, and the compute stages as the role's series say. `inference_count`
    counts images, `execution_count` batches (device batches, or a transformer's predictor calls)."""
    samples = _samples(registry)
    return {"model_stats": [_one_model(name, series, samples.get(name, {})) for name, series in models]}


_Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(registry: CollectorRegistry) -> dict[str, _Samples]:
    """Samples labelled with a model, by model name, then by (sample name, other labels)."""
    by_model: dict[str, _Samples] = {}
    for family in registry.collect():
        for sample in family.samples:
            labels = dict(sample.labels)
            model = labels.pop(MODEL_LABEL, None)
            if model is None:
                continue
            key = (sample.name, tuple(sorted(labels.items())))
            values = by_model.setdefault(model, {})
            values[key] = values.get(key, 0.0) + sample.value
    return by_model


def _sum(samples: _Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, key_labels), v in samples.items() if n == name and wanted <= set(key_labels))


def _duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": round(count), "ns": round(seconds * _NS_PER_S)}


def _one_model(name: str, series: StatisticsSeries, samples: _Samples) -> dict[str, Any]:
    def total(metric: str, **labels: str) -> float:
        return _sum(samples, f"{series.prefix}_{metric}", **labels)

    requests = total("request_seconds_count")
    ok = total("request_seconds_count", status=OUTCOME_OK)
    ok_s = total("request_seconds_sum", status=OUTCOME_OK)
    all_s = total("request_seconds_sum")

    def stage(parts: tuple[tuple[str, Mapping[str, str]], ...]) -> dict[str, int]:
        # Every batch passes every part: the last part's count is the batches that finished the stage.
        if not parts:  # a stage the role does not have
            return _duration(0, 0)
        last, last_labels = parts[-1]
        seconds = sum(total(f"{metric}_sum", **labels) for metric, labels in parts)
        return _duration(total(f"{last}_count", **last_labels), seconds)

    return {
        "name": name,
        "last_inference": round(total("last_request_timestamp_seconds") * 1000),
        "inference_count": round(total("batch_size_sum")),
        "execution_count": round(total("batch_size_count")),
        "inference_stats": {
            "success": _duration(ok, ok_s),
            "fail": _duration(requests - ok, all_s - ok_s),
            "queue": _duration(total("queue_wait_seconds_count"), total("queue_wait_seconds_sum")),
            "compute_input": stage(series.compute_input),
            "compute_infer": stage(series.compute_infer),
            "compute_output": stage(series.compute_output),
            # No response cache: Triton reports these as zeros when it has none.
            "cache_hit": _duration(0, 0),
            "cache_miss": _duration(0, 0),
        },
        # Per batch size would need a histogram per size; the batch size distribution is on /metrics.
        "batch_stats": [],
    }
