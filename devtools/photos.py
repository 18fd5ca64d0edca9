"""Real photos from scikit-image's bundled data, encoded the way clients send them.

Nothing is downloaded: `skimage.data` ships these photos in its wheel.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache
from typing import Any

import numpy as np
import skimage.data
from PIL import Image

# ImageNet classes a correct model puts in its top 3 for `chelsea` (a tabby cat) and `coffee` (a cup).
CAT_CLASSES = frozenset({"Egyptian cat", "tabby", "tiger cat", "Persian cat", "Siamese cat", "lynx"})
COFFEE_CLASSES = frozenset({"espresso", "cup", "coffee mug"})
JPEG_QUALITY = 92


@cache
def photo(name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 HWC RGB, cached (do not write to it); `size` (width, height) resizes it bilinearly."""
    array = getattr(skimage.data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    array = np.ascontiguousarray(array[..., :3])
    if size is not None:
        array = np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BILINEAR))
    return array


def encode(array: np.ndarray, fmt: str = "JPEG", **options: Any) -> bytes:
    """HW (grey), HWC RGB or RGBA uint8 pixels in any format Pillow writes; JPEG at quality 92 unless told."""
    buf = io.BytesIO()
    defaults = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
    Image.fromarray(array).save(buf, format=fmt, **(defaults | options))
    return buf.getvalue()


def jpeg(name: str) -> bytes:
    return encode(photo(name), "JPEG")


def blank_png(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A valid, all-black greyscale PNG of any size, built without an imaging library.

    Its zeros compress about 1000:1, so a 20000x20000 image is a few KB: how a decompression
    bomb looks, and how a width no decoder accepts gets past a size check."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width * bit_depth + 7) // 8)  # filter byte, then the packed pixels
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
