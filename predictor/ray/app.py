"""The Serve application: `serve run` and KubeRay's RayService import `predictor.ray.app:build_app`.

    ingress (REST via Serve's HTTP proxy, gRPC via its gRPC proxy; decodes, encodes)
        -> ImageClassifierReplica x N (artifact, engine, dynamic batcher; GPUs as configured)

Its arguments are `AppArgs`: the same settings as `python -m predictor`'s flags, under the same
names. Unknown or misspelt arguments are refused when the application is deployed.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, create_model, field_validator
from ray.serve import Application

from ..batching import BatchingConfig
from ..engine import EngineConfig
from ..flags import FlagConfig
from ..limits import RequestLimits
from .config import check_num_gpus, replica_options
from .ingress import IngressDeployment
from .replica import ClassifierArgs, ImageClassifierDeployment

# The ingress decodes and encodes: light work next to the replicas' model, so it asks for little.
INGRESS_NUM_CPUS = 0.5
# The configs whose fields are application arguments, under their flag names and defaults.
_CONFIGS: tuple[type[FlagConfig], ...] = (EngineConfig, BatchingConfig, RequestLimits)
C = TypeVar("C", bound=FlagConfig)


class AppArgsBase(BaseModel):
    """`args` of the application in a Serve config. Besides these, every flag of the engine,
    batching and request-limit configs, with the same name and default (`AppArgs`)."""

    # protected_namespaces: `model_name` and `model_dir` are the predictor's own flag names.
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_name: str = "image-classifier"
    model_dir: str = "/mnt/models"
    storage_uri: str | None = None
    # Resources of each classifier replica.
    num_gpus: float = 0.0
    num_cpus: float = 1.0

    @field_validator("num_gpus")
    @classmethod
    def _num_gpus(cls, value: float) -> float:
        check_num_gpus(value)
        return value

    def config(self, kind: type[C]) -> C:
        """One of the predictor's configs, built from these arguments as from parsed flags."""
        return kind.from_args(argparse.Namespace(**self.model_dump()))


def _config_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for config in _CONFIGS:
        hints = typing.get_type_hints(config)
        for field in dataclasses.fields(config):  # type: ignore[arg-type]
            if field.init and field.name not in fields:
                fields[field.name] = (hints[field.name], field.default)
    return fields


AppArgs: type[AppArgsBase] = create_model("AppArgs", __base__=AppArgsBase, **_config_fields())


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application builder: the config's `args`, checked against `AppArgs`."""
    app_args = AppArgs.model_validate(args)
    # Config errors surface here, at deploy time, rather than in every replica's constructor.
    batching, limits = app_args.config(BatchingConfig), app_args.config(RequestLimits)
    engine_config = app_args.config(EngineConfig)
    classifier = ImageClassifierDeployment.options(
        **replica_options(batching, num_gpus=app_args.num_gpus, num_cpus=app_args.num_cpus)
    ).bind(
        ClassifierArgs(app_args.model_name, app_args.model_dir, app_args.storage_uri, engine_config, batching, limits)
    )
    ingress = IngressDeployment.options(
        ray_actor_options={"num_cpus": INGRESS_NUM_CPUS},
        # Each request holds an ingress slot while its images are in a replica; Serve must not
        # cap the replicas' batches here (its default is 5), and the replicas refuse what overflows.
        max_ongoing_requests=batching.max_queue_size,
    )
    return ingress.bind(
        classifier, model_name=app_args.model_name, limits=limits, request_timeout_ms=batching.request_timeout_ms
    )
