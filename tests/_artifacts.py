"""Helpers for tests that need real model artifacts (small ones, built in tmp dirs)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import torch
from torchvision.transforms import InterpolationMode, v2

from predictor.artifact import ModelSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
# A small, fast network and input size for tests that need an artifact but not accuracy.
SMALL_ARCH = "mobilenet_v3_small"
SMALL_NUM_CLASSES = 10
SMALL_RESIZE_PX = 72
SMALL_CROP_PX = 64


def export_model_module() -> ModuleType:
    """scripts/export_model.py imported as a module (scripts/ is not a package)."""
    name = "export_model"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / "export_model.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def make_small_artifact(directory: Path, fmt: str = "safetensors", **overrides: object) -> ModelSpec:
    """An untrained mobilenet_v3_small with 10 classes at 64 px: about a second to export."""
    kwargs: dict[str, object] = dict(
        arch=SMALL_ARCH,
        fmt=fmt,
        num_classes=SMALL_NUM_CLASSES,
        resize_size=SMALL_RESIZE_PX,
        crop_size=SMALL_CROP_PX,
    )
    kwargs.update(overrides)
    return export_model_module().export(directory, **kwargs)


def copy_artifact(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


def reference_batch(image_hwc_uint8, spec: ModelSpec) -> torch.Tensor:
    """Independent reference preprocessing: resize shorter side, centre crop, normalise."""
    interpolation = {
        "bilinear": InterpolationMode.BILINEAR,
        "bicubic": InterpolationMode.BICUBIC,
        "nearest": InterpolationMode.NEAREST,
    }[spec.interpolation]
    transform = v2.Compose(
        [
            v2.Resize(spec.resize_size, interpolation=interpolation, antialias=True),
            v2.CenterCrop(spec.crop_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(spec.mean), std=list(spec.std)),
        ]
    )
    image = torch.from_numpy(image_hwc_uint8).permute(2, 0, 1).contiguous()
    return transform(image).unsqueeze(0)
