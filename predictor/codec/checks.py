"""Checks shared by the v1 and v2 decoders; each raises `InvalidInput` naming the input."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from kserve.errors import InvalidInput

from ..imaging import check_image
from ..jobs import EncodedImage
from ..limits import RequestLimits
from .request import ModelShape


def check_count(count: int, limits: RequestLimits, *, what: str) -> None:
    if count == 0:
        raise InvalidInput(f"{what} is empty: send at least one image")
    if count > limits.max_images_per_request:
        raise InvalidInput(
            f"{what} has {count} images, more than max_images_per_request={limits.max_images_per_request}"
        )


def check_elements(count: int, limits: RequestLimits, *, where: str) -> None:
    if count > limits.max_tensor_elements:
        raise InvalidInput(f"{where} has {count} elements, more than max_tensor_elements={limits.max_tensor_elements}")


def check_chw(shape: tuple[int, ...], model: ModelShape, *, where: str, batch: bool = False) -> None:
    s = model.crop_size
    if tuple(shape) != (3, s, s):
        prefix = "N, " if batch else ""
        got = ", ".join(str(d) for d in shape)
        raise InvalidInput(f"{where} must have shape [{prefix}3, {s}, {s}] (preprocessed CHW), got [{prefix}{got}]")


def check_finite(array: np.ndarray, *, where: str) -> None:
    if not np.isfinite(array).all():
        raise InvalidInput(f"{where} contains NaN or Inf; every value must be finite")


def encoded_image(data: bytes, where: str, limits: RequestLimits) -> EncodedImage:
    """An encoded image whose format and header-declared size pass the limits."""
    try:
        check_image(
            data,
            max_pixels=limits.max_image_pixels,
            max_aspect_ratio=limits.max_aspect_ratio,
            allowed=limits.allowed_formats,
        )
    except InvalidInput as e:
        raise InvalidInput(f"{where}: {e.reason}") from e
    return EncodedImage(data)


def b64decode(value: Any, *, where: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidInput(f"{where} must be a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInput(f"{where} is not valid base64: {e}") from e


def top_k(value: Any, model: ModelShape) -> int:
    if value is None:
        return min(model.default_top_k, model.num_classes)
    return positive_int(value, "top_k", model.num_classes)


def positive_int(value: Any, what: str, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        # Only ASCII digits: "²".isdigit() is True but int("²") fails.
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        else:
            raise InvalidInput(f"{what} must be an integer in 1..{upper}, got {value!r}")
    if not 1 <= value <= upper:
        raise InvalidInput(f"{what} must be an integer in 1..{upper}, got {value}")
    return int(value)


def parameter(params: Any, key: str) -> Any:
    """A request/output parameter, from REST (dict) or gRPC (InferParameter map)."""
    if not params or key not in params:
        return None
    value = params[key]
    which = getattr(value, "WhichOneof", None)
    if which is not None:  # gRPC InferParameter
        choice = which("parameter_choice")
        return getattr(value, choice) if choice else None
    return value


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
