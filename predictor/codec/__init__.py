"""Protocol codec: KServe v1 bodies and v2 `InferRequest`s in, per-image jobs out;
top-k predictions in, v1 bodies and v2 `InferResponse`s out.

Every check a client can fail raises KServe's `InvalidInput` (400 / INVALID_ARGUMENT)
with a message that names the input and says what was expected and what came.
"""

from ..jobs import EncodedImage, Image, Job, PixelImage, Prediction, PreprocessedImage
from .request import (
    INPUT_PIXELS,
    INPUT_TENSOR,
    OUTPUT_DATATYPES,
    OUTPUT_INDICES,
    OUTPUT_NAMES,
    OUTPUT_PROBABILITIES,
    PIXELS_CROPPED,
    DecodedRequest,
    ModelShape,
    input_types,
    max_top_k,
    output_types,
)
from .v1 import decode_v1, encode_v1
from .v2 import decode_v2, encode_v2

__all__ = [
    "INPUT_PIXELS",
    "INPUT_TENSOR",
    "OUTPUT_DATATYPES",
    "OUTPUT_INDICES",
    "OUTPUT_NAMES",
    "OUTPUT_PROBABILITIES",
    "PIXELS_CROPPED",
    "DecodedRequest",
    "EncodedImage",
    "Image",
    "Job",
    "ModelShape",
    "PixelImage",
    "Prediction",
    "PreprocessedImage",
    "decode_v1",
    "decode_v2",
    "encode_v1",
    "encode_v2",
    "input_types",
    "max_top_k",
    "output_types",
]
