"""The data of one v2 input tensor, from JSON lists, gRPC contents or raw bytes, into images.

Shapes and element counts are checked against the declared shape and the request limits
before any array is built, so a request declaring a huge tensor costs nothing.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import torch
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput

from ..imaging import check_size
from ..jobs import Image, PixelImage, PreprocessedImage
from ..limits import RequestLimits
from .checks import b64decode, check_chw, check_count, check_elements, check_finite, encoded_image, first_line
from .request import PIXELS_CROPPED, ModelShape

_ITEMSIZE = {"UINT8": 1, "FP32": 4}
_NP_DTYPE = {"UINT8": np.uint8, "FP32": np.float32}


def check_shape(shape: Any, name: str) -> list[int]:
    if not isinstance(shape, (list, tuple)) and not hasattr(shape, "__iter__"):
        raise InvalidInput(f"input {name!r} has no valid shape")
    dims = list(shape)
    if not dims:
        raise InvalidInput(f"input {name!r} has an empty shape []; expected at least the batch dimension")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise InvalidInput(f"input {name!r} shape {dims} must contain integers")
        if d <= 0:
            raise InvalidInput(f"input {name!r} shape {dims} has a dimension <= 0; every dimension must be >= 1")
    return [int(d) for d in dims]


def encoded_images(tensor: InferInput, shape: list[int], limits: RequestLimits) -> list[Image]:
    """BYTES [N] (or [N, 1]): one encoded image per element."""
    name = tensor.name
    if len(shape) == 2 and shape[1] == 1:
        shape = [shape[0]]
    if len(shape) != 1:
        raise InvalidInput(f"input {name!r} must have shape [N] (one encoded image per element), got {shape}")
    check_count(shape[0], limits, what=f"input {name!r}")
    raw = tensor._raw_data
    if raw is not None:
        items = _deserialize_bytes(bytes(raw), name)
    else:
        items = [_json_bytes_item(x, name, i) for i, x in enumerate(flatten(tensor.data))]
    if len(items) != shape[0]:
        raise InvalidInput(f"input {name!r} declares shape {shape} but carries {len(items)} elements")
    return [encoded_image(data, f"input {name!r}[{i}]", limits) for i, data in enumerate(items)]


def _json_bytes_item(x: Any, name: str, i: int) -> bytes:
    # Over gRPC `bytes_contents` arrive as bytes; in JSON the image is a base64 string.
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    if isinstance(x, str):
        return b64decode(x, where=f"input {name!r}[{i}]")
    raise InvalidInput(f"input {name!r}[{i}] must be a base64 string, got {type(x).__name__}")


def _deserialize_bytes(raw: bytes, name: str) -> list[bytes]:
    """Triton's BYTES wire format: each element is a 4-byte little-endian length, then the bytes."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput(f"input {name!r}: BYTES data truncated inside an element's 4-byte length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInput(
                f"input {name!r}: BYTES element {len(items)} declares {length} bytes but only "
                f"{len(raw) - offset} remain"
            )
        items.append(raw[offset : offset + length])
        offset += length
    return items


def numeric_array(tensor: InferInput, shape: list[int], datatype: str, limits: RequestLimits) -> np.ndarray:
    """UINT8 or FP32 data as an array of the declared shape."""
    name = tensor.name
    count = math.prod(shape)  # Python ints: no overflow however large the declared dims
    check_elements(count, limits, where=f"input {name!r}")
    raw = tensor._raw_data
    if raw is not None:
        expected_bytes = count * _ITEMSIZE[datatype]
        if len(raw) != expected_bytes:
            raise InvalidInput(
                f"input {name!r} shape {shape} needs {expected_bytes} bytes of {datatype}, got {len(raw)}"
            )
        array = np.frombuffer(raw, dtype=_NP_DTYPE[datatype])
    else:
        flat = flatten(tensor.data)
        if len(flat) != count:
            raise InvalidInput(f"input {name!r} shape {shape} needs {count} elements, got {len(flat)}")
        try:
            array = np.asarray(flat, dtype=np.float64)
        except (ValueError, TypeError) as e:
            raise InvalidInput(f"input {name!r} data must be numbers: {first_line(e)}") from e
        if datatype == "UINT8":
            if array.size and (np.any(array != np.floor(array)) or array.min() < 0 or array.max() > 255):
                raise InvalidInput(f"input {name!r} UINT8 data must be integers in 0..255")
        array = array.astype(_NP_DTYPE[datatype])
    return array.reshape(shape)


def flatten(data: Any) -> list[Any]:
    """Nested lists (JSON) or an array (gRPC contents) as one flat list."""
    if data is None:
        return []
    if isinstance(data, np.ndarray):
        return list(data.reshape(-1).tolist())
    out: list[Any] = []
    stack = [iter(data if isinstance(data, (list, tuple)) else list(data))]
    # Iterative flatten: a 150,000-deep nested list must not blow the Python stack.
    while stack:
        for x in stack[-1]:
            if isinstance(x, (list, tuple)):
                stack.append(iter(x))
                break
            out.append(x)
        else:
            stack.pop()
    return out


def pixel_images(array: np.ndarray, name: str, limits: RequestLimits, crop_size: int | None = None) -> list[Image]:
    """UINT8 [N, H, W, C] or [H, W, C], C in 1, 3, 4: RGB [3, H, W] per image. With `crop_size`, the
    images are already resized and cropped: exactly [N, crop_size, crop_size, 3]."""
    if array.ndim == 3:
        array = array[None]
    if crop_size is not None and (array.ndim != 4 or tuple(array.shape[1:]) != (crop_size, crop_size, 3)):
        raise InvalidInput(
            f"input {name!r} with {PIXELS_CROPPED}=true must have shape [N, {crop_size}, {crop_size}, 3] "
            f"(RGB, already cropped to this model's crop size), got {list(array.shape)}"
        )
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise InvalidInput(
            f"input {name!r} must be [N, H, W, C] or [H, W, C] with C in 1 (grey), 3 (RGB), 4 (RGBA); "
            f"got shape {list(array.shape)}"
        )
    try:
        check_size(
            array.shape[2], array.shape[1], max_pixels=limits.max_image_pixels, max_aspect_ratio=limits.max_aspect_ratio
        )
    except InvalidInput as e:
        raise InvalidInput(f"input {name!r}: {e.reason}") from e
    images: list[Image] = []
    for hwc in array:
        chw = torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1)
        if chw.shape[0] == 1:
            chw = chw.expand(3, -1, -1)
        elif chw.shape[0] == 4:
            chw = chw[:3]  # alpha carries no class information
        images.append(PixelImage(chw.contiguous(), cropped=crop_size is not None))
    return images


def preprocessed_images(array: np.ndarray, name: str, model: ModelShape) -> list[Image]:
    """FP32 [N, 3, S, S] or [3, S, S]: model input as it is."""
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise InvalidInput(
            f"input {name!r} must be [N, 3, {model.crop_size}, {model.crop_size}], got shape {list(array.shape)}"
        )
    check_chw(array.shape[1:], model, where=f"input {name!r}", batch=True)
    check_finite(array, where=f"input {name!r}")
    return [PreprocessedImage(torch.from_numpy(np.array(chw))) for chw in array]
