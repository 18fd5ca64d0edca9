"""The classifier replica: one `ImageClassifier` (artifact, engine, dynamic batcher) per Ray actor.

Callers decode requests themselves and send only the images (`jobs.Job`, plain picklable
values); the replica batches them with every other caller's and returns the predictions.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ray import serve

from .. import metrics
from ..artifact import is_remote
from ..batching import BatchingConfig
from ..engine import EngineConfig
from ..jobs import Job, Prediction
from ..limits import RequestLimits
from ..model import ImageClassifier, ModelInfo
from .config import CLASSIFIER_DEPLOYMENT

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaStats:
    replica_id: str
    pid: int
    batches: int
    images: int
    batches_over_one: int  # batches of two or more images: proof that batching happens


@dataclass(frozen=True)
class ClassifierArgs:
    """What each replica builds its `ImageClassifier` from: plain picklable values Serve ships."""

    model_name: str
    model_dir: str
    storage_uri: str | None
    engine_config: EngineConfig
    batching: BatchingConfig
    limits: RequestLimits


class ImageClassifierReplica:
    def __init__(self, args: ClassifierArgs) -> None:
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        # Replicas on one node download on their own; a directory each keeps them from racing.
        model_dir = os.path.join(args.model_dir, self.replica_id) if is_remote(args.storage_uri) else args.model_dir
        self.model = ImageClassifier(
            args.model_name,
            model_dir=model_dir,
            storage_uri=args.storage_uri,
            engine_config=args.engine_config,
            batching=args.batching,
            limits=args.limits,
        )
        # Raises on a bad artifact: Serve then retries the constructor and finally marks the
        # deployment unhealthy, so a broken model never takes traffic.
        self.model.load()

    async def infer(self, jobs: list[Job], timeout_ms: float | None) -> list[Prediction]:
        self.model.reject_if_full()
        return await self.model.infer(jobs, timeout_ms)

    def describe(self) -> ModelInfo:
        assert self.model.info is not None
        return self.model.info

    def stats(self) -> ReplicaStats:
        count = total = single = 0.0
        for family in metrics.BATCH_SIZE.family.collect():
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    count = sample.value
                elif sample.name.endswith("_sum"):
                    total = sample.value
                elif sample.name.endswith("_bucket") and sample.labels.get("le") == "1.0":
                    single = sample.value
        return ReplicaStats(self.replica_id, os.getpid(), int(count), int(total), int(count - single))

    def check_health(self) -> None:
        # Serve restarts a replica whose health check raises; a replica that is draining is not broken.
        if self.model.batcher is None:
            raise RuntimeError("the model is not loaded")

    async def __del__(self) -> None:
        # Serve calls this once no request is in flight any more (graceful_shutdown_timeout_s).
        await self.model.stop_serving()
        self.model.stop()


ImageClassifierDeployment = serve.deployment(name=CLASSIFIER_DEPLOYMENT)(ImageClassifierReplica)
