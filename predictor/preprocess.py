"""What a network expects of its input, and the eval transform that produces it
(torchvision's classification preset): resize the shorter side, centre-crop, scale to
[0, 1], normalise. The transform runs on whatever device the image is on.

`Preprocessing` declares the five fields once: `model.json` carries them (its spec extends
this model), the exporter takes them as arguments, and `EvalTransform` applies them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

Interpolation = Literal["bilinear", "bicubic", "nearest"]
INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)
_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

_Finite = Annotated[float, Field(allow_inf_nan=False)]
_FinitePositive = Annotated[float, Field(allow_inf_nan=False, gt=0)]


def key_error(key: str, expected: str, got: Any) -> PydanticCustomError:
    """A rule across keys, broken: worded like the rules pydantic checks itself (key, rule, value)."""
    return PydanticCustomError(
        key, "key '{key}': expected {expected}, got {got}", {"key": key, "expected": expected, "got": got}
    )


class Preprocessing(BaseModel):
    """Resize the shorter side to `resize_size`, centre-crop `crop_size`, normalise 0..1 RGB.

    Each field's description is the rule a value must meet, as error messages quote it.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    resize_size: int = Field(ge=1, description="an integer >= 1, the pixels the shorter image side is resized to")
    crop_size: int = Field(ge=1, description="an integer >= 1 and <= resize_size, the pixels of the centre crop")
    interpolation: Interpolation = Field(description=f"one of {', '.join(INTERPOLATIONS)}, the resize filter")
    # JSON has no tuples: a list is accepted (its items are still strictly numbers).
    mean: tuple[_Finite, _Finite, _Finite] = Field(
        strict=False, description="a list of 3 finite numbers, the per-channel mean of 0..1 RGB pixels"
    )
    std: tuple[_FinitePositive, _FinitePositive, _FinitePositive] = Field(
        strict=False, description="a list of 3 finite numbers > 0, the per-channel standard deviation"
    )

    @model_validator(mode="after")
    def _crop_fits_in_resize(self) -> Preprocessing:
        if self.crop_size > self.resize_size:
            raise key_error("crop_size", f"<= resize_size ({self.resize_size})", self.crop_size)
        return self

    def preprocessing(self) -> Preprocessing:
        """Just the preprocessing fields (of a model spec that extends this)."""
        return Preprocessing(**{name: getattr(self, name) for name in Preprocessing.model_fields})


class EvalTransform:
    def __init__(self, **preprocessing: Any) -> None:
        """Keyword arguments are `Preprocessing`'s fields; interpolation defaults to bilinear."""
        self.preprocessing = Preprocessing.model_validate({"interpolation": "bilinear", **preprocessing})
        self.resize_size = self.preprocessing.resize_size
        self.crop_size = self.preprocessing.crop_size
        self.mean = list(self.preprocessing.mean)
        self.std = list(self.preprocessing.std)
        self.interpolation = _MODES[self.preprocessing.interpolation]

    @classmethod
    def from_spec(cls, spec: Preprocessing) -> EvalTransform:
        """The transform a model spec (or any `Preprocessing`) asks for."""
        return cls(**dict(spec.preprocessing()))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 3, H, W] -> float32 [..., 3, crop, crop]."""
        return self.normalise(self.resize_crop(image))

    def resize_crop(self, image: torch.Tensor) -> torch.Tensor:
        """The geometric half: uint8 [..., 3, H, W] -> uint8 [..., 3, crop, crop]. A transformer
        runs it on the CPU and sends the crop; the predictor then only normalises."""
        image = F.resize(image, [self.resize_size], interpolation=self.interpolation, antialias=True)
        cropped: torch.Tensor = F.center_crop(image, [self.crop_size])
        return cropped

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """The photometric half: uint8 [..., 3, crop, crop] -> float32, scaled to 0..1 and normalised."""
        image = F.to_dtype(image, torch.float32, scale=True)
        normalised: torch.Tensor = F.normalize(image, mean=self.mean, std=self.std)
        return normalised
