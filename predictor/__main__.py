"""`python -m predictor`: KServe's flags plus ours, config read once, passed into constructors.

Each config declares its own flags (`predictor.flags`); this module only groups them,
builds the configs from the parsed flags and starts one server or the `--workers` supervisor.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from . import role
from .batching import BatchingConfig
from .engine import EngineConfig
from .model import ImageClassifier, ImageModel
from .ray.config import RayConfig

MODULE = "predictor"


def build_parser() -> argparse.ArgumentParser:
    parser = role.parser(
        f"python -m {MODULE}", __doc__.split("\n\n")[0], model_dir_help="Local model artifact directory"
    )
    EngineConfig.add_flags(parser, "engine")
    BatchingConfig.add_flags(parser, "dynamic batching")
    RayConfig.add_flags(parser, "Ray Serve (needs the `ray` extra)")
    return parser


def _ray_model(ray_config: RayConfig) -> Callable[..., ImageModel]:
    try:
        from .ray.local import start_replicas
    except ImportError as e:
        raise ValueError(f"--ray_replicas needs the `ray` extra (pip install 'predictor[ray]'): {e}") from e
    return functools.partial(start_replicas, ray_config=ray_config)


def _prepare(args: argparse.Namespace) -> role.ModelFactory:
    engine_config = EngineConfig.from_args(args)
    batching = BatchingConfig.from_args(args)
    ray_config = RayConfig.from_args(args)
    if ray_config.enabled and args.workers > 1:
        raise ValueError("--ray_replicas and --workers are alternatives: choose one")
    model_class = _ray_model(ray_config) if ray_config.enabled else ImageClassifier
    return functools.partial(model_class, engine_config=engine_config, batching=batching)


def main(argv: list[str] | None = None) -> int:
    return role.main(argv, build_parser(), module=MODULE, prepare=_prepare)


if __name__ == "__main__":
    sys.exit(main())
