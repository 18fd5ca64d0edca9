"""The Serve application: `serve run` and KubeRay's RayService import `predictor.ray.app:build_app`.

    ingress (REST via Serve's HTTP proxy, gRPC via its gRPC proxy; decodes, encodes)
        -> ImageClassifierReplica x N (artifact, engine, dynamic batcher; GPUs as configured)

Its arguments are `AppArgs`: the same settings as `python -m predictor`'s flags, under the same
names. Unknown or misspelt arguments are refused when the application is deployed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator
from ray.serve import Application

from ..engine import EngineConfig
from ..limits import RequestLimits
from ..model import BatchingConfig
from .config import check_num_gpus, replica_options
from .ingress import IngressDeployment
from .replica import ImageClassifierDeployment

_ENGINE, _BATCHING, _LIMITS = EngineConfig(), BatchingConfig(), RequestLimits()
# The ingress decodes and encodes: light work next to the replicas' model, so it asks for little.
INGRESS_NUM_CPUS = 0.5


class AppArgs(BaseModel):
    """`args` of the application in a Serve config; the defaults are the predictor's own."""

    # protected_namespaces: `model_name` and `model_dir` are the predictor's own flag names.
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_name: str = "image-classifier"
    model_dir: str = "/mnt/models"
    storage_uri: str | None = None
    # Resources of each classifier replica.
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    # Engine.
    device: str = _ENGINE.device
    precision: str | None = _ENGINE.precision
    channels_last: bool = _ENGINE.channels_last
    compile: bool = _ENGINE.compile
    decode_threads: int = _ENGINE.decode_threads
    batch_buckets: tuple[int, ...] | None = _ENGINE.batch_buckets
    # Dynamic batching, in each replica.
    max_batch_size: int = _BATCHING.max_batch_size
    max_latency_ms: float = _BATCHING.max_latency_ms
    max_queue_size: int = _BATCHING.max_queue_size
    request_timeout_ms: float | None = _BATCHING.request_timeout_ms
    max_concurrent_batches: int = _BATCHING.max_concurrent_batches
    # Request limits, checked by the ingress before anything reaches a replica.
    max_body_bytes: int = _LIMITS.max_body_bytes
    max_images_per_request: int = _LIMITS.max_images_per_request
    max_image_pixels: int = _LIMITS.max_image_pixels
    max_aspect_ratio: float = _LIMITS.max_aspect_ratio
    max_tensor_elements: int = _LIMITS.max_tensor_elements

    @field_validator("num_gpus")
    @classmethod
    def _num_gpus(cls, value: float) -> float:
        check_num_gpus(value)
        return value

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            device=self.device,
            precision=self.precision,
            channels_last=self.channels_last,
            compile=self.compile,
            max_batch_size=self.max_batch_size,
            decode_threads=self.decode_threads,
            batch_buckets=self.batch_buckets,
        )

    def batching(self) -> BatchingConfig:
        return BatchingConfig(
            max_batch_size=self.max_batch_size,
            max_latency_ms=self.max_latency_ms,
            max_queue_size=self.max_queue_size,
            request_timeout_ms=self.request_timeout_ms,
            max_concurrent_batches=self.max_concurrent_batches,
        )

    def limits(self) -> RequestLimits:
        return RequestLimits(
            max_body_bytes=self.max_body_bytes,
            max_images_per_request=self.max_images_per_request,
            max_image_pixels=self.max_image_pixels,
            max_aspect_ratio=self.max_aspect_ratio,
            max_tensor_elements=self.max_tensor_elements,
        )


def build_app(args: AppArgs) -> Application:
    """Serve's application builder (Serve validates the config's `args` into AppArgs first)."""
    if isinstance(args, dict):  # called directly rather than by Serve
        args = AppArgs.model_validate(args)
    batching, limits = args.batching(), args.limits()
    # Config errors surface here, at deploy time, rather than in every replica's constructor.
    engine_config = args.engine_config()
    classifier = ImageClassifierDeployment.options(
        **replica_options(batching, num_gpus=args.num_gpus, num_cpus=args.num_cpus)
    ).bind(
        args.model_name,
        model_dir=args.model_dir,
        storage_uri=args.storage_uri,
        engine_config=engine_config,
        batching=batching,
        limits=limits,
    )
    ingress = IngressDeployment.options(
        ray_actor_options={"num_cpus": INGRESS_NUM_CPUS},
        # Each request holds an ingress slot while its images are in a replica; Serve must not
        # cap the replicas' batches here (its default is 5), and the replicas refuse what overflows.
        max_ongoing_requests=batching.max_queue_size,
    )
    return ingress.bind(
        classifier, model_name=args.model_name, limits=limits, request_timeout_ms=batching.request_timeout_ms
    )
