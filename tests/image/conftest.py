"""Fixtures for the image tests: the built image (`make image`), the engine, and the default model, readable by
the image's user.

IMAGE and CONTAINER_ENGINE come from the environment, as `make image-test` and `make test` export them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ._engine import Engine, PodSpec


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine(os.environ.get("CONTAINER_ENGINE", "podman"))


@pytest.fixture(scope="session")
def image(engine) -> str:
    name = os.environ.get("IMAGE")
    if not name:
        pytest.fail("IMAGE is not set: run `make image-test` (or `make test`), which builds the image first")
    if not engine.has_image(name):
        pytest.fail(f"{engine.name} has no image {name}: run `make image-test`, which builds it")
    return name


@pytest.fixture(scope="session")
def pod() -> PodSpec:
    return PodSpec.from_serving_runtime()


@pytest.fixture(scope="session")
def mounted_model_dir(default_model_dir, tmp_path_factory) -> Path:
    """The default model as the storage initializer leaves it: world-readable (pytest's own dirs are 0700)."""
    model = tmp_path_factory.mktemp("mounted") / "model"
    shutil.copytree(default_model_dir, model)
    for path in [model, *model.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return model
