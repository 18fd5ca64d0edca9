"""What travels through the batcher: one image and the k it needs, and the top-k that comes back.

The protocol codec produces jobs and consumes predictions; the engine consumes jobs and
produces predictions. Neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EncodedImage:
    """A JPEG, PNG or WebP file whose header has been checked, not yet decoded."""

    data: bytes


@dataclass(frozen=True)
class PixelImage:
    """Decoded RGB, uint8 [3, H, W]. `cropped`: already resized and centre-cropped to the model's
    crop size (by a transformer), so only scaling and normalisation remain."""

    pixels: torch.Tensor
    cropped: bool = False


@dataclass(frozen=True)
class PreprocessedImage:
    """Normalised float32 [3, S, S]: goes straight to the model."""

    tensor: torch.Tensor


Image = EncodedImage | PixelImage | PreprocessedImage


@dataclass(frozen=True)
class Job:
    """One image on its way through the batcher: what the engine needs, nothing more."""

    image: Image
    top_k: int


@dataclass(frozen=True)
class Prediction:
    """The top-k of one image, most probable first."""

    indices: list[int]
    probabilities: list[float]

    def top(self, k: int) -> Prediction:
        return Prediction(indices=self.indices[:k], probabilities=self.probabilities[:k])
