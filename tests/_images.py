"""Real photos from scikit-image's bundled data, encoded the way clients send them."""

from __future__ import annotations

import base64
import io
from functools import cache

import numpy as np
import skimage.data
from PIL import Image

CAT_CLASSES = {"Egyptian cat", "tabby", "tiger cat", "Persian cat", "Siamese cat", "lynx"}
COFFEE_CLASSES = {"espresso", "cup", "coffee mug"}


@cache
def photo(name: str) -> np.ndarray:
    """uint8 HWC RGB."""
    array = getattr(skimage.data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def encode(array: np.ndarray, fmt: str = "JPEG", **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}) | options)
    return buf.getvalue()


def jpeg(name: str) -> bytes:
    return encode(photo(name), "JPEG")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
