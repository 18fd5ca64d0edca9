"""Ray settings: the `--ray_*` flags, and the Serve options each classifier replica gets.

Imported by `python -m predictor` whether or not the `ray` extra is installed, so nothing
here imports Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..batching import BatchingConfig
from ..flags import FlagConfig, flag

# The Serve application and deployment names: the KubeRay manifest and the README use them too.
APP_NAME = "image-classifier"
CLASSIFIER_DEPLOYMENT = "ImageClassifierReplica"
INGRESS_DEPLOYMENT = "Ingress"


def _optional_address(text: str) -> str | None:
    return text or None


@dataclass(frozen=True)
class RayConfig(FlagConfig):
    """How `python -m predictor` runs the model on Ray; `ray_replicas == 0` means it does not."""

    ray_replicas: int = flag(0, "Run the model as N Ray Serve replicas behind this server (0: in this process)")
    ray_num_gpus: float = flag(0.0, "GPUs per replica; fractions share a GPU (0.5: two replicas per GPU)")
    ray_num_cpus: float = flag(1.0, "CPUs Ray reserves per replica")
    ray_address: str | None = flag(
        None,
        "Ray cluster to join (e.g. ray://head:10001 or auto); default: start a local one",
        parse=_optional_address,
    )

    def __post_init__(self) -> None:
        replicas = self.ray_replicas
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ValueError(f"ray_replicas must be an integer >= 0, got {replicas!r}")
        check_num_gpus(self.ray_num_gpus)
        if not math.isfinite(self.ray_num_cpus) or self.ray_num_cpus <= 0:
            raise ValueError(f"ray_num_cpus must be a number > 0, got {self.ray_num_cpus!r}")
        if self.ray_address is not None and not self.ray_address.strip():
            raise ValueError("ray_address must not be empty")

    @property
    def enabled(self) -> bool:
        return self.ray_replicas > 0


def check_num_gpus(num_gpus: float) -> None:
    # Ray accepts fractions below 1 (replicas share the GPU) and whole numbers above it.
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, (int, float)) or not math.isfinite(num_gpus):
        raise ValueError(f"ray_num_gpus must be a number, got {num_gpus!r}")
    if num_gpus < 0 or (num_gpus > 1 and num_gpus != int(num_gpus)):
        raise ValueError(f"ray_num_gpus must be 0, a fraction below 1, or a whole number of GPUs; got {num_gpus!r}")


def max_ongoing_requests(batching: BatchingConfig) -> int:
    """Requests Serve lets into one replica at once.

    Serve stops routing to a replica at this many requests, so it caps the batch a replica can
    form (the reason `@serve.batch` rarely fills a batch at its default of 5). The batcher needs
    one full batch forming while `max_concurrent_batches` more are in flight, all of one-image
    requests in the worst case; more than the queue holds would only be refused by it.
    """
    needed = (batching.max_concurrent_batches + 1) * batching.max_batch_size
    return max(1, min(batching.max_queue_size, needed))


def replica_options(batching: BatchingConfig, *, num_gpus: float, num_cpus: float) -> dict[str, Any]:
    """`Deployment.options(...)` for the classifier: resources and the queue limits from the batcher."""
    check_num_gpus(num_gpus)
    return {
        "max_ongoing_requests": max_ongoing_requests(batching),
        # Beyond this many requests waiting at one caller for a replica, Serve answers
        # BackPressureError (a 503 here) instead of queueing without bound.
        "max_queued_requests": batching.max_queue_size,
        "ray_actor_options": {"num_cpus": num_cpus, "num_gpus": num_gpus},
        # Serve waits this long for in-flight requests before stopping a replica: the same
        # budget as the batcher's deadline, so a drained replica never cuts a request short.
        "graceful_shutdown_timeout_s": _graceful_shutdown_s(batching),
    }


def _graceful_shutdown_s(batching: BatchingConfig) -> float:
    timeout_ms = batching.request_timeout_ms or 10_000.0
    return max(5.0, timeout_ms / 1000 + 5.0)
