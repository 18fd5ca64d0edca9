"""Build an image-classification `nn.Module` by architecture name.

Names are a torchvision classification builder (``resnet50``, ``mobilenet_v3_small``, ...
as listed by ``torchvision.models.list_models``), ``efficientnet-lite0`` ..
``efficientnet-lite4`` from the ``efficientnet_lite_pytorch`` package, or ``timm/<name>``
for any model of timm (``timm.list_models()``, with or without a pretrained tag such as
``resnet50.a1_in1k``; timm is the optional ``timm`` extra). Networks are built with random
weights; nothing here downloads anything.  (Pretrained weights are the exporter's business:
``predictor.export``.)
"""

from __future__ import annotations

from functools import cache
from types import ModuleType
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision import transforms

from .preprocess import INTERPOLATIONS, Preprocessing

EFFICIENTNET_LITE_NAMES: tuple[str, ...] = tuple(f"efficientnet-lite{i}" for i in range(5))

# ImageNet statistics on 0..1 pixels, what torchvision's classification weights expect.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# The Lite weights were converted from TensorFlow, trained on (pixel_0_255 - 127) / 128.
LITE_MEAN: tuple[float, float, float] = (127.0 / 255.0,) * 3
LITE_STD: tuple[float, float, float] = (128.0 / 255.0,) * 3
# TF EfficientNet evaluation resizes to crop + 32 ("crop_padding") before the centre crop.
LITE_CROP_PADDING_PX = 32


TIMM_PREFIX = "timm/"


class UnknownArchitectureError(ValueError):
    """The name is not a torchvision classification model, an EfficientNet-Lite or a timm model."""


@cache
def torchvision_architectures() -> tuple[str, ...]:
    """Every torchvision classification builder (detection, video, quantized... are not listed)."""
    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def available_architectures() -> tuple[str, ...]:
    return EFFICIENTNET_LITE_NAMES + torchvision_architectures()


def is_efficientnet_lite(name: str) -> bool:
    return name in EFFICIENTNET_LITE_NAMES


def is_timm(name: str) -> bool:
    return name.startswith(TIMM_PREFIX)


def check_architecture(name: str) -> None:
    if is_timm(name):
        _timm_model_name(name)
        return
    if name not in EFFICIENTNET_LITE_NAMES and name not in torchvision_architectures():
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}: expected one of {', '.join(available_architectures())}, "
            f"or {TIMM_PREFIX}<a name from timm.list_models()>"
        )


def _timm() -> ModuleType:
    try:
        import timm
    except ImportError as e:
        raise UnknownArchitectureError(
            f"architectures named {TIMM_PREFIX}<name> need timm, the optional extra: pip install 'predictor[timm]'"
        ) from e
    return timm


def _timm_model_name(name: str) -> str:
    """The timm model of a `timm/<name>` architecture, checked against timm's registry."""
    model = name[len(TIMM_PREFIX) :]
    if not model or "/" in model or ":" in model:
        # A hub id ("hf-hub:org/repo") would make timm fetch a config: nothing is downloaded here.
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}: expected {TIMM_PREFIX}<a name from timm.list_models()>, not a hub id"
        )
    timm = _timm()
    try:
        known = timm.is_model(model) and timm.models.get_pretrained_cfg(model) is not None
    except RuntimeError:  # a pretrained tag the model does not have
        known = False
    if not known:
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}: timm {timm.__version__} has no model {model!r} "
            "(timm.list_models() and timm.list_pretrained() name them)"
        )
    return model


def build_model(name: str, num_classes: int) -> nn.Module:
    """A randomly initialised network in eval mode on CPU, float32, with `num_classes` outputs."""
    check_architecture(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if is_timm(name):
        # pretrained=False: timm builds the network from code, and nothing is downloaded.
        model: nn.Module = _timm().create_model(_timm_model_name(name), pretrained=False, num_classes=num_classes)
    elif is_efficientnet_lite(name):
        # Imported lazily: only Lite users pay for importing the package.
        from efficientnet_lite_pytorch import EfficientNet

        # from_name, not from_pretrained: the latter torch.load()s without weights_only.
        # Never call set_swish(): Lite uses ReLU6 and Swish ruins the pretrained accuracy.
        model = EfficientNet.from_name(name, num_classes=num_classes)
    else:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return model.float().eval()


def default_preprocessing(name: str) -> Preprocessing:
    check_architecture(name)
    if is_timm(name):
        return _timm_preprocessing(_timm_model_name(name))
    if is_efficientnet_lite(name):
        from efficientnet_lite_pytorch import EfficientNet

        crop_size = int(EfficientNet.get_image_size(name))
        return Preprocessing(
            resize_size=crop_size + LITE_CROP_PADDING_PX,
            crop_size=crop_size,
            interpolation="bilinear",
            mean=LITE_MEAN,
            std=LITE_STD,
        )
    return Preprocessing(resize_size=256, crop_size=224, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _timm_preprocessing(model: str) -> Preprocessing:
    """What timm's own eval transform does for the model's pretrained config, when that is what
    `EvalTransform` does (resize the shorter side, centre-crop a square, normalise); else a ValueError."""
    from timm.data.config import resolve_data_config
    from timm.data.transforms_factory import create_transform

    config: dict[str, Any] = resolve_data_config(pretrained_cfg=_timm().models.get_pretrained_cfg(model).to_dict())
    steps = create_transform(**config, is_training=False).transforms
    resize = next((step for step in steps if isinstance(step, transforms.Resize)), None)
    crop = next((step for step in steps if isinstance(step, transforms.CenterCrop)), None)
    # crop_mode "squash" resizes to a (height, width) pair and "border" pads: neither is this transform.
    if (
        resize is None
        or crop is None
        or not isinstance(resize.size, int)
        or crop.size[0] != crop.size[1]
        or resize.interpolation.value not in INTERPOLATIONS
    ):
        raise ValueError(
            f"timm's eval transform for {model!r} is not resize-shorter-side, centre-crop, normalise "
            f"(crop_mode {config.get('crop_mode')!r}, input_size {config.get('input_size')}): "
            "give resize_size, crop_size, interpolation, mean and std in model.json"
        )
    return Preprocessing(
        resize_size=resize.size,
        crop_size=int(crop.size[0]),
        interpolation=resize.interpolation.value,
        mean=tuple(float(m) for m in config["mean"]),
        std=tuple(float(s) for s in config["std"]),
    )


def example_input(batch_size: int, crop_size: int) -> torch.Tensor:
    return torch.zeros(batch_size, 3, crop_size, crop_size, dtype=torch.float32)
