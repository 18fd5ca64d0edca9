"""Shared fixtures: real artifacts exported once per session, a real server on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devtools import launcher
from devtools.artifacts import export_default_model
from predictor.artifact import load_artifact, read_spec

# What `make test` and `make image-test` export or pass down to the tests; a test of what make does
# for a user runs make without them, as a user's shell would.
MAKE_SET_VARIABLES = ("IMAGE", "RAY_IMAGE", "CONTAINER_ENGINE", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")


def user_env() -> dict[str, str]:
    """The environment without what an enclosing make put there."""
    return {k: v for k, v in os.environ.items() if k not in MAKE_SET_VARIABLES}


DEFAULT_MODEL_DIR_ENV = "PREDICTOR_TEST_MODEL_DIR"


@pytest.fixture(scope="session")
def default_model_dir(tmp_path_factory) -> Path:
    """The default model (EfficientNet-Lite0, ImageNet) exported the way `make model` does it."""
    if os.environ.get(DEFAULT_MODEL_DIR_ENV):
        return Path(os.environ[DEFAULT_MODEL_DIR_ENV])
    return export_default_model(tmp_path_factory.mktemp("efficientnet-lite0"))


@pytest.fixture(scope="session")
def spec(default_model_dir):
    return read_spec(default_model_dir)


@pytest.fixture(scope="session")
def labels(default_model_dir) -> tuple[str, ...]:
    return load_artifact(default_model_dir).labels


@pytest.fixture(scope="session")
def server(default_model_dir):
    """One server for the protocol and bad-input tests: small batches, CPU."""
    running = launcher.start(default_model_dir, "--max_batch_size", "8", "--max_latency_ms", "2")
    yield running
    running.stop()
