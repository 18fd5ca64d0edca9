"""Build an image-classification `nn.Module` by architecture name.

Names are either a torchvision classification builder (``resnet50``,
``mobilenet_v3_small``, ... as listed by ``torchvision.models.list_models``) or
``efficientnet-lite0`` .. ``efficientnet-lite4`` from the
``efficientnet_lite_pytorch`` package.  Networks are built with random weights;
nothing here downloads anything.  (Pretrained weights are the exporter's business:
``predictor.export``.)
"""

from __future__ import annotations

from functools import cache

import torch
import torchvision
from torch import nn

from .preprocess import Preprocessing

EFFICIENTNET_LITE_NAMES: tuple[str, ...] = tuple(f"efficientnet-lite{i}" for i in range(5))

# ImageNet statistics on 0..1 pixels, what torchvision's classification weights expect.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# The Lite weights were converted from TensorFlow, trained on (pixel_0_255 - 127) / 128.
LITE_MEAN: tuple[float, float, float] = (127.0 / 255.0,) * 3
LITE_STD: tuple[float, float, float] = (128.0 / 255.0,) * 3
# TF EfficientNet evaluation resizes to crop + 32 ("crop_padding") before the centre crop.
LITE_CROP_PADDING_PX = 32


class UnknownArchitectureError(ValueError):
    """The name is neither a torchvision classification model nor an EfficientNet-Lite."""


@cache
def torchvision_architectures() -> tuple[str, ...]:
    """Every torchvision classification builder (detection, video, quantized... are not listed)."""
    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def available_architectures() -> tuple[str, ...]:
    return EFFICIENTNET_LITE_NAMES + torchvision_architectures()


def is_efficientnet_lite(name: str) -> bool:
    return name in EFFICIENTNET_LITE_NAMES


def check_architecture(name: str) -> None:
    if name not in EFFICIENTNET_LITE_NAMES and name not in torchvision_architectures():
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}: expected one of {', '.join(available_architectures())}"
        )


def build_model(name: str, num_classes: int) -> nn.Module:
    """A randomly initialised network in eval mode on CPU, float32, with `num_classes` outputs."""
    check_architecture(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if is_efficientnet_lite(name):
        # Imported lazily: only Lite users pay for importing the package.
        from efficientnet_lite_pytorch import EfficientNet

        # from_name, not from_pretrained: the latter torch.load()s without weights_only.
        # Never call set_swish(): Lite uses ReLU6 and Swish ruins the pretrained accuracy.
        model: nn.Module = EfficientNet.from_name(name, num_classes=num_classes)
    else:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return model.float().eval()


def default_preprocessing(name: str) -> Preprocessing:
    check_architecture(name)
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


def example_input(batch_size: int, crop_size: int) -> torch.Tensor:
    return torch.zeros(batch_size, 3, crop_size, crop_size, dtype=torch.float32)
