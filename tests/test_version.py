"""One release number: predictor/__init__.py names it; the image tags that make and kustomize use,
and the deploy tool's package, follow it."""

import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml

import predictor

from .conftest import user_env

REPO = Path(__file__).resolve().parents[1]


def _make_print(*names: str) -> list[str]:
    """The values make gives `names` by default (nothing from the caller's environment)."""
    echo = " ".join(f"$({name})" for name in names)
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", "-", "print"],
        input=f"include Makefile\nprint:\n\t@echo {echo}\n",
        cwd=REPO,
        env=user_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def test_make_tags_the_images_with_the_release():
    assert _make_print("VERSION", "IMAGE", "RAY_IMAGE") == [
        predictor.__version__,
        f"ghcr.io/example/image-classifier-predictor:{predictor.__version__}",
        f"ghcr.io/example/image-classifier-predictor-ray:{predictor.__version__}",
    ]


@pytest.mark.parametrize("kustomization", ["inferenceservices/runtime", "inferenceservices/ray"])
def test_kustomize_tags_the_images_with_the_release(kustomization):
    images = yaml.safe_load((REPO / kustomization / "kustomization.yaml").read_text())["images"]
    assert [image["newTag"] for image in images] == [predictor.__version__] * len(images)


def test_the_deploy_tool_is_released_with_the_predictor():
    project = tomllib.loads((REPO / "isvctl" / "pyproject.toml").read_text())["project"]
    assert project["version"] == predictor.__version__
