"""`python -m predictor --ray_replicas N`: the classifier as N Ray Serve replicas behind this
process's hardened REST and gRPC server (`predictor.server`), which decodes requests and sends
the replicas their images through a `RemoteClassifier`.

Without `--ray_address` a Ray instance is started for this process and ends with it; with one,
the replicas run on that cluster and are deleted when this server stops.
"""

from __future__ import annotations

import logging
import math
import os

import ray
from ray import serve

from ..artifact import fetch, read_spec
from ..batching import BatchingConfig
from ..engine import EngineConfig
from ..limits import RequestLimits
from .config import RayConfig, replica_options
from .remote import RemoteClassifier
from .replica import ClassifierArgs, ImageClassifierDeployment

logger = logging.getLogger(__name__)

# A constructor that fails this often (bad artifact, unreachable storage) fails the start.
_CONSTRUCTOR_RETRIES = 3


def app_name(model_name: str) -> str:
    # Not the RayService application's name: on a shared cluster this must not replace it.
    return f"predictor-{model_name}"


def start_replicas(
    model_name: str,
    ray_config: RayConfig,
    *,
    model_dir: str,
    storage_uri: str | None,
    engine_config: EngineConfig,
    batching: BatchingConfig,
    limits: RequestLimits,
) -> RemoteClassifier:
    """Connect to (or start) Ray, run the replicas, and return the model that reaches them.

    Raises ArtifactError or ValueError when the model cannot be served: restarting cannot help.
    """
    if ray_config.ray_address is None:
        # Fetch and check once, here, like --workers: replicas on this machine share the copy,
        # and a bad artifact stops the start in a second instead of after every replica's retries.
        model_dir = str(fetch(storage_uri, model_dir))
        read_spec(model_dir)
        storage_uri = None
        # Logical CPUs, not cores: each replica reserves `num_cpus`, and Ray gives it that many
        # intra-op threads (OMP_NUM_THREADS), so replicas never oversubscribe the cores they asked for.
        cpus = max(os.cpu_count() or 1, math.ceil(ray_config.ray_replicas * ray_config.ray_num_cpus))
        # "local": a new instance of our own, never one that happens to run on this machine.
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, configure_logging=False)
    else:
        ray.init(address=ray_config.ray_address, configure_logging=False)
    # Where `ray status`, `serve status` and other drivers reach this instance.
    logger.info("Ray instance at %s", ray.get_runtime_context().gcs_address)
    # The replicas are reached through their handle only: no Serve HTTP or gRPC proxy here.
    serve.start(proxy_location="Disabled")
    name = app_name(model_name)
    deployment = ImageClassifierDeployment.options(
        num_replicas=ray_config.ray_replicas,
        max_constructor_retry_count=_CONSTRUCTOR_RETRIES,
        **replica_options(batching, num_gpus=ray_config.ray_num_gpus, num_cpus=ray_config.ray_num_cpus),
    )
    args = ClassifierArgs(model_name, model_dir, storage_uri, engine_config, batching, limits)
    app = deployment.bind(args)
    logger.info("starting %d Ray Serve replicas of %s", ray_config.ray_replicas, model_name)
    try:
        handle = serve.run(app, name=name, route_prefix=None)
    except RuntimeError as e:  # Serve's word for a deployment whose replicas never started
        raise ValueError(f"the Ray Serve replicas did not start: {e}") from e
    owns_ray = ray_config.ray_address is None

    def release() -> None:
        if owns_ray:
            # Every request has been answered by now: the instance ends with this server.
            ray.shutdown()
        else:
            # Serve drains each replica (its batcher finishes) before it stops it.
            serve.delete(name, _blocking=False)

    return RemoteClassifier(
        model_name, handle, limits=limits, request_timeout_ms=batching.request_timeout_ms, on_stop=release
    )
