"""The eval transform (torchvision's classification preset): resize the shorter side,
centre-crop, scale to [0, 1], normalise. Runs on whatever device the image is on."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

_INTERPOLATION = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


class EvalTransform:
    def __init__(
        self,
        *,
        resize_size: int,
        crop_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bilinear",
    ) -> None:
        self.resize_size = resize_size
        self.crop_size = crop_size
        self.mean = list(mean)
        self.std = list(std)
        self.interpolation = _INTERPOLATION[interpolation]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 [3, H, W] -> float32 [3, crop, crop]."""
        image = F.resize(image, [self.resize_size], interpolation=self.interpolation, antialias=True)
        image = F.center_crop(image, [self.crop_size])
        image = F.to_dtype(image, torch.float32, scale=True)
        return F.normalize(image, mean=self.mean, std=self.std)
