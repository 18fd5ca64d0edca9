"""Request limits, enforced before the expensive work. One frozen value, built from flags once."""

from __future__ import annotations

from dataclasses import dataclass

from .flags import FlagConfig, flag
from .imaging import ALLOWED_FORMATS


@dataclass(frozen=True)
class RequestLimits(FlagConfig):
    max_body_bytes: int = flag(
        64 * 1024 * 1024, "Larger request bodies get 413 before they are buffered; also the gRPC message limit"
    )
    max_images_per_request: int = flag(64, "Images in one request")
    # 40 MP covers every phone camera; a 20000x20000 bomb (400 MP) is refused from its header.
    max_image_pixels: int = flag(40_000_000, "Pixels of one image, read from its header before decoding")
    # Resizing the short side of a 1,000,000x1 image to 256 px would allocate gigabytes;
    # panoramas stay under 10:1.
    max_aspect_ratio: float = flag(20.0, "Longest side / shortest side of one image, from its header")
    # 64 preprocessed 3x224x224 images, with room for larger crop sizes.
    max_tensor_elements: int = flag(64 * 3 * 384 * 384, "Elements in one 'pixels' or 'tensor' input")
    allowed_formats: tuple[str, ...] = ALLOWED_FORMATS

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_images_per_request", "max_image_pixels", "max_tensor_elements"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.max_aspect_ratio, (int, float)) or self.max_aspect_ratio < 1:
            raise ValueError(f"max_aspect_ratio must be a number >= 1, got {self.max_aspect_ratio!r}")
        unknown = set(self.allowed_formats) - set(ALLOWED_FORMATS)
        if unknown:
            raise ValueError(
                f"allowed_formats may only contain {', '.join(ALLOWED_FORMATS)}; got {', '.join(sorted(unknown))}"
            )
