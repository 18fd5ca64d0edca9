"""Model artifacts for tests: the default model and small, fast ones, exported into tmp dirs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torchvision.transforms import InterpolationMode, v2

from predictor.artifact import ModelSpec

DEFAULT_ARCH = "efficientnet-lite0"
# A small, fast network and input size for tests that need an artifact but not accuracy.
SMALL_ARCH = "mobilenet_v3_small"
SMALL_NUM_CLASSES = 10
SMALL_RESIZE_PX = 72
SMALL_CROP_PX = 64


def export(output_dir: str | os.PathLike[str], **kwargs: Any) -> ModelSpec:
    """`predictor.export.export`: write an artifact (see its flags) and read its spec back."""
    from predictor.export import export as export_artifact

    return export_artifact(output_dir, **kwargs)


def export_default_model(output_dir: str | os.PathLike[str]) -> Path:
    """The default model (EfficientNet-Lite0, ImageNet weights) exported the way `make model` does it."""
    export(output_dir, arch=DEFAULT_ARCH)
    return Path(output_dir)


def make_small_artifact(directory: Path, fmt: str = "safetensors", **overrides: Any) -> ModelSpec:
    """An untrained mobilenet_v3_small with 10 classes at 64 px: about a second to export."""
    kwargs: dict[str, Any] = dict(
        arch=SMALL_ARCH,
        fmt=fmt,
        num_classes=SMALL_NUM_CLASSES,
        resize_size=SMALL_RESIZE_PX,
        crop_size=SMALL_CROP_PX,
    )
    kwargs.update(overrides)
    return export(directory, **kwargs)


def copy_artifact(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


def reference_batch(image_hwc_uint8: np.ndarray, spec: ModelSpec) -> torch.Tensor:
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
    return cast(torch.Tensor, transform(image)).unsqueeze(0)
