"""The image every benchmark request carries."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..photos import encode, photo

# Named photos; a GPU target's requests are 500x375 JPEGs.
NAMED = {"chelsea": None, "chelsea-500x375": (500, 375)}


@dataclass(frozen=True)
class BenchImage:
    name: str
    data: bytes
    width: int
    height: int


def load_image(spec: str) -> BenchImage:
    """`chelsea` (451x300 JPEG), `chelsea-500x375`, or a JPEG/PNG/WebP file."""
    if spec in NAMED:
        pixels = photo("chelsea", NAMED[spec])
        return BenchImage(spec, encode(pixels, "JPEG"), pixels.shape[1], pixels.shape[0])
    data = Path(spec).read_bytes()
    width, height = Image.open(io.BytesIO(data)).size
    return BenchImage(spec, data, width, height)
