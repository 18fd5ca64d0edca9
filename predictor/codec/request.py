"""What a decoded request holds, the v2 tensor names the model advertises, and what the
codec must know about the model to validate a request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kserve.protocol.infer_type import InferRequest

from ..jobs import Image

# v2 tensor names: the model metadata advertises exactly these.
INPUT_ENCODED = "image"  # BYTES [N]: JPEG / PNG / WebP files
INPUT_PIXELS = "pixels"  # UINT8 [N, H, W, 3] or [H, W, 3]: decoded RGB
INPUT_TENSOR = "tensor"  # FP32 [N, 3, S, S]: already preprocessed
OUTPUT_NAMES = "class_names"  # BYTES [N, k]
OUTPUT_PROBABILITIES = "probabilities"  # FP32 [N, k]
OUTPUT_INDICES = "class_indices"  # INT64 [N, k]

# Parameter of a `pixels` input: true when each image is already resized and centre-cropped to the
# model's crop size (what a transformer sends), so the predictor only scales and normalises.
PIXELS_CROPPED = "cropped"

INPUT_DATATYPES = {INPUT_ENCODED: "BYTES", INPUT_PIXELS: "UINT8", INPUT_TENSOR: "FP32"}
OUTPUT_DATATYPES = {OUTPUT_NAMES: "BYTES", OUTPUT_PROBABILITIES: "FP32", OUTPUT_INDICES: "INT64"}


def input_types(crop_size: int) -> list[dict[str, Any]]:
    """The v2 metadata of the inputs, for a model of this crop size (-1: not known yet)."""
    return [
        {"name": INPUT_ENCODED, "datatype": "BYTES", "shape": [-1]},
        {"name": INPUT_PIXELS, "datatype": "UINT8", "shape": [-1, -1, -1, 3]},
        {"name": INPUT_TENSOR, "datatype": "FP32", "shape": [-1, 3, crop_size, crop_size]},
    ]


def output_types() -> list[dict[str, Any]]:
    return [{"name": name, "datatype": datatype, "shape": [-1, -1]} for name, datatype in OUTPUT_DATATYPES.items()]


@dataclass(frozen=True)
class ModelShape:
    """What the codec must know about the model to validate requests."""

    crop_size: int
    num_classes: int
    default_top_k: int


@dataclass(frozen=True)
class OutputRequest:
    name: str
    class_count: int | None
    binary: bool


@dataclass
class DecodedRequest:
    images: list[Image]
    top_k: int
    # v2 only: which outputs, as what, and the request they answer.
    outputs: list[OutputRequest] = field(default_factory=list)
    v2_request: InferRequest | None = None
    # time.monotonic() when the predictor got the request: its deadline counts from here.
    received_at: float = 0.0


def max_top_k(decoded: DecodedRequest) -> int:
    """The k the engine must compute: the request's top_k or its largest class_count."""
    counts = [o.class_count for o in decoded.outputs if o.class_count]
    return max([decoded.top_k, *counts])
