"""Ray settings: the `--ray_*` flags, and the Serve options each classifier replica gets.

Imported by `python -m predictor` whether or not the `ray` extra is installed, so nothing
here imports Ray.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

from ..model import BatchingConfig

# The Serve application and deployment names: the KubeRay manifest and the README use them too.
APP_NAME = "image-classifier"
CLASSIFIER_DEPLOYMENT = "ImageClassifierReplica"
INGRESS_DEPLOYMENT = "Ingress"


@dataclass(frozen=True)
class RayConfig:
    """How `python -m predictor` runs the model on Ray; `replicas == 0` means it does not."""

    replicas: int = 0
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    address: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 0:
            raise ValueError(f"ray_replicas must be an integer >= 0, got {self.replicas!r}")
        check_num_gpus(self.num_gpus)
        if not math.isfinite(self.num_cpus) or self.num_cpus <= 0:
            raise ValueError(f"ray_num_cpus must be a number > 0, got {self.num_cpus!r}")
        if self.address is not None and not self.address.strip():
            raise ValueError("ray_address must not be empty")

    @property
    def enabled(self) -> bool:
        return self.replicas > 0

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("Ray Serve (needs the `ray` extra)")
        group.add_argument(
            "--ray_replicas",
            type=int,
            default=0,
            help="Run the model as N Ray Serve replicas behind this server (0: in this process)",
        )
        group.add_argument(
            "--ray_num_gpus",
            type=float,
            default=0.0,
            help="GPUs per replica; fractions share a GPU (0.5: two replicas per GPU)",
        )
        group.add_argument("--ray_num_cpus", type=float, default=1.0, help="CPUs Ray reserves per replica")
        group.add_argument(
            "--ray_address",
            default=None,
            help="Ray cluster to join (e.g. ray://head:10001 or auto); default: start a local one",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RayConfig:
        return cls(
            replicas=args.ray_replicas,
            num_gpus=args.ray_num_gpus,
            num_cpus=args.ray_num_cpus,
            address=args.ray_address,
        )


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
