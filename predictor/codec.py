"""Protocol codec: KServe v1 bodies and v2 `InferRequest`s in, per-image jobs out;
top-k predictions in, v1 bodies and v2 `InferResponse`s out.

Every check a client can fail raises KServe's `InvalidInput` (400 / INVALID_ARGUMENT)
with a message that names the input and says what was expected and what came.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import torch
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse, RequestedOutput

from .imaging import check_image, check_size
from .limits import RequestLimits

# v2 tensor names: the model metadata advertises exactly these.
INPUT_ENCODED = "image"  # BYTES [N]: JPEG / PNG / WebP files
INPUT_PIXELS = "pixels"  # UINT8 [N, H, W, 3] or [H, W, 3]: decoded RGB
INPUT_TENSOR = "tensor"  # FP32 [N, 3, S, S]: already preprocessed
OUTPUT_NAMES = "class_names"  # BYTES [N, k]
OUTPUT_PROBABILITIES = "probabilities"  # FP32 [N, k]
OUTPUT_INDICES = "class_indices"  # INT64 [N, k]

INPUT_DATATYPES = {INPUT_ENCODED: "BYTES", INPUT_PIXELS: "UINT8", INPUT_TENSOR: "FP32"}
OUTPUT_DATATYPES = {OUTPUT_NAMES: "BYTES", OUTPUT_PROBABILITIES: "FP32", OUTPUT_INDICES: "INT64"}
_ITEMSIZE = {"UINT8": 1, "FP32": 4}
_NP_DTYPE = {"UINT8": np.uint8, "FP32": np.float32}


@dataclass(frozen=True)
class EncodedImage:
    data: bytes


@dataclass(frozen=True)
class PixelImage:
    """Decoded RGB, uint8 [3, H, W]."""

    pixels: torch.Tensor


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
    indices: list[int]
    probabilities: list[float]


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


@dataclass(frozen=True)
class ModelShape:
    """What the codec must know about the model to validate requests."""

    crop_size: int
    num_classes: int
    default_top_k: int


# ----------------------------------------------------------------------------- v1


def decode_v1(body: Any, model: ModelShape, limits: RequestLimits) -> DecodedRequest:
    if isinstance(body, (bytes, bytearray)):
        # KServe hands over the raw body when the content type is not JSON (curl -d sends
        # application/x-www-form-urlencoded); the body is still meant as JSON.
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise InvalidInput(f"v1 request body must be JSON: {e}") from e
    if not isinstance(body, dict):
        raise InvalidInput(f"v1 request body must be a JSON object, got {type(body).__name__}")
    instances = body.get("instances")
    if instances is None:
        raise InvalidInput('v1 request must have an "instances" list')
    if not isinstance(instances, list):
        raise InvalidInput(f'"instances" must be a list, got {type(instances).__name__}')
    _check_count(len(instances), limits, what='"instances"')
    top_k = _top_k(body.get("top_k"), model)
    images = [_v1_instance(i, inst, model, limits) for i, inst in enumerate(instances)]
    return DecodedRequest(images=images, top_k=top_k)


def _v1_instance(i: int, inst: Any, model: ModelShape, limits: RequestLimits) -> Image:
    where = f"instances[{i}]"
    if isinstance(inst, dict):
        # TF-Serving / KServe image convention: {"image": {"b64": ...}} or {"b64": ...}.
        if set(inst) == {"image"} and isinstance(inst["image"], dict):
            inst, where = inst["image"], f"{where}.image"
        if set(inst) != {"b64"}:
            raise InvalidInput(
                f'{where} must be {{"image": {{"b64": "<base64 image>"}}}} or {{"b64": ...}}; got keys {sorted(inst)}'
            )
        return _encoded(_b64decode(inst["b64"], where=f"{where}.b64"), where, limits)
    if isinstance(inst, list):
        try:
            array = np.asarray(inst, dtype=np.float32)
        except (ValueError, TypeError, RecursionError) as e:
            raise InvalidInput(
                f"{where} must be a [3, {model.crop_size}, {model.crop_size}] array of numbers: {_first_line(e)}"
            ) from e
        _check_elements(array.size, limits, where=where)
        _check_chw(array.shape, model, where=where)
        _check_finite(array, where=where)
        return PreprocessedImage(torch.from_numpy(array))
    raise InvalidInput(f"{where} must be an object with a base64 image or a [3, S, S] array, got {type(inst).__name__}")


def encode_v1(predictions: list[Prediction], labels: tuple[str, ...]) -> dict:
    return {
        "predictions": [
            {
                "class_names": [labels[i] for i in p.indices],
                "class_indices": p.indices,
                "probabilities": p.probabilities,
            }
            for p in predictions
        ]
    }


# ----------------------------------------------------------------------------- v2


def decode_v2(request: InferRequest, model: ModelShape, limits: RequestLimits) -> DecodedRequest:
    inputs = request.inputs or []
    if not inputs:
        raise InvalidInput(
            f"request has no inputs; send one of {', '.join(f'{n!r} ({t})' for n, t in INPUT_DATATYPES.items())}"
        )
    if len(inputs) != 1:
        raise InvalidInput(
            f"request must have exactly one input, got {len(inputs)}: {', '.join(repr(i.name) for i in inputs)}"
        )
    tensor = inputs[0]
    name, datatype = tensor.name, tensor.datatype
    expected = INPUT_DATATYPES.get(name)
    if expected is None:
        raise InvalidInput(
            f"unknown input {name!r}; this model accepts "
            f"{', '.join(f'{n!r} ({t})' for n, t in INPUT_DATATYPES.items())}"
        )
    if datatype != expected:
        raise InvalidInput(f"input {name!r} must have datatype {expected}, got {datatype}")
    shape = _check_shape(tensor.shape, name)
    if name == INPUT_ENCODED:
        images = _v2_encoded(tensor, shape, limits)
    else:
        array = _v2_numeric(tensor, shape, datatype, limits)
        images = _v2_pixels(array, name, limits) if name == INPUT_PIXELS else _v2_tensor(array, name, model)
    _check_count(len(images), limits, what=f"input {name!r}")
    return DecodedRequest(
        images=images,
        top_k=_top_k(_parameter(request.parameters, "top_k"), model),
        outputs=_requested_outputs(request, model),
        v2_request=request,
    )


def _check_shape(shape: Any, name: str) -> list[int]:
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


def _v2_encoded(tensor: Any, shape: list[int], limits: RequestLimits) -> list[Image]:
    name = tensor.name
    if len(shape) == 2 and shape[1] == 1:
        shape = [shape[0]]
    if len(shape) != 1:
        raise InvalidInput(f"input {name!r} must have shape [N] (one encoded image per element), got {shape}")
    _check_count(shape[0], limits, what=f"input {name!r}")
    raw = tensor._raw_data
    if raw is not None:
        items = _deserialize_bytes(bytes(raw), name)
    else:
        items = [_json_bytes_item(x, name, i) for i, x in enumerate(_flat(tensor.data))]
    if len(items) != shape[0]:
        raise InvalidInput(f"input {name!r} declares shape {shape} but carries {len(items)} elements")
    return [_encoded(data, f"input {name!r}[{i}]", limits) for i, data in enumerate(items)]


def _encoded(data: bytes, where: str, limits: RequestLimits) -> EncodedImage:
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


def _json_bytes_item(x: Any, name: str, i: int) -> bytes:
    # Over gRPC `bytes_contents` arrive as bytes; in JSON the image is a base64 string.
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    if isinstance(x, str):
        return _b64decode(x, where=f"input {name!r}[{i}]")
    raise InvalidInput(f"input {name!r}[{i}] must be a base64 string, got {type(x).__name__}")


def _deserialize_bytes(raw: bytes, name: str) -> list[bytes]:
    """Triton's BYTES wire format: each element is a 4-byte little-endian length, then the bytes."""
    items, offset = [], 0
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


def _v2_numeric(tensor: Any, shape: list[int], datatype: str, limits: RequestLimits) -> np.ndarray:
    name = tensor.name
    count = math.prod(shape)  # Python ints: no overflow however large the declared dims
    _check_elements(count, limits, where=f"input {name!r}")
    raw = tensor._raw_data
    if raw is not None:
        expected_bytes = count * _ITEMSIZE[datatype]
        if len(raw) != expected_bytes:
            raise InvalidInput(
                f"input {name!r} shape {shape} needs {expected_bytes} bytes of {datatype}, got {len(raw)}"
            )
        array = np.frombuffer(raw, dtype=_NP_DTYPE[datatype])
    else:
        flat = _flat(tensor.data)
        if len(flat) != count:
            raise InvalidInput(f"input {name!r} shape {shape} needs {count} elements, got {len(flat)}")
        try:
            array = np.asarray(flat, dtype=np.float64)
        except (ValueError, TypeError) as e:
            raise InvalidInput(f"input {name!r} data must be numbers: {_first_line(e)}") from e
        if datatype == "UINT8":
            if array.size and (np.any(array != np.floor(array)) or array.min() < 0 or array.max() > 255):
                raise InvalidInput(f"input {name!r} UINT8 data must be integers in 0..255")
        array = array.astype(_NP_DTYPE[datatype])
    return array.reshape(shape)


def _flat(data: Any) -> list:
    if data is None:
        return []
    if isinstance(data, np.ndarray):
        return data.reshape(-1).tolist()
    out: list = []
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


def _v2_pixels(array: np.ndarray, name: str, limits: RequestLimits) -> list[Image]:
    if array.ndim == 3:
        array = array[None]
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
        images.append(PixelImage(chw.contiguous()))
    return images


def _v2_tensor(array: np.ndarray, name: str, model: ModelShape) -> list[Image]:
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise InvalidInput(
            f"input {name!r} must be [N, 3, {model.crop_size}, {model.crop_size}], got shape {list(array.shape)}"
        )
    _check_chw(array.shape[1:], model, where=f"input {name!r}", batch=True)
    _check_finite(array, where=f"input {name!r}")
    return [PreprocessedImage(torch.from_numpy(np.array(chw))) for chw in array]


def _requested_outputs(request: InferRequest, model: ModelShape) -> list[OutputRequest]:
    binary_default = bool(request.use_binary_outputs)
    requested = request.request_outputs or []
    if not requested:
        return [OutputRequest(n, None, binary_default) for n in OUTPUT_DATATYPES]
    outputs = []
    for out in requested:
        if out.name not in OUTPUT_DATATYPES:
            raise InvalidInput(f"unknown output {out.name!r}; this model has {', '.join(map(repr, OUTPUT_DATATYPES))}")
        # Triton's clients send "classification"; "class_count" is the name in its docs and in curl examples.
        class_count = _parameter(out.parameters, "classification")
        if class_count is None:
            class_count = _parameter(out.parameters, "class_count")
        if class_count is not None:
            class_count = _positive_int(class_count, f"output {out.name!r} class_count", model.num_classes)
        binary = _parameter(out.parameters, "binary_data")
        outputs.append(OutputRequest(out.name, class_count, binary_default if binary is None else bool(binary)))
    return outputs


def max_top_k(decoded: DecodedRequest) -> int:
    """The k the engine must compute: the request's top_k or its largest class_count."""
    counts = [o.class_count for o in decoded.outputs if o.class_count]
    return max([decoded.top_k, *counts])


def encode_v2(
    decoded: DecodedRequest, predictions: list[Prediction], labels: tuple[str, ...], model_name: str
) -> InferResponse:
    request = decoded.v2_request
    assert request is not None
    k = decoded.top_k
    indices = np.array([p.indices[:k] for p in predictions], dtype=np.int64)
    probabilities = np.array([p.probabilities[:k] for p in predictions], dtype=np.float32)
    tensors: list[InferOutput] = []
    for out in decoded.outputs:
        if out.class_count:
            # Triton's classification extension: "score:index:label" strings, k per image.
            data = np.array(
                [
                    [
                        f"{s:f}:{i}:{labels[i]}".encode()
                        for s, i in zip(p.probabilities[: out.class_count], p.indices[: out.class_count], strict=False)
                    ]
                    for p in predictions
                ],
                dtype=np.object_,
            )
            datatype = "BYTES"
        elif out.name == OUTPUT_NAMES:
            data = np.array([[labels[i].encode() for i in row] for row in indices], dtype=np.object_)
            datatype = "BYTES"
        elif out.name == OUTPUT_PROBABILITIES:
            data, datatype = probabilities, "FP32"
        else:
            data, datatype = indices, "INT64"
        tensor = InferOutput(name=out.name, shape=list(data.shape), datatype=datatype)
        tensor.set_data_from_numpy(data, binary_data=out.binary)
        tensors.append(tensor)
    binary = any(o.binary for o in decoded.outputs)
    return InferResponse(
        response_id=request.id or "",
        model_name=model_name,
        infer_outputs=tensors,
        from_grpc=request.from_grpc,
        use_binary_outputs=binary,
        requested_outputs=[RequestedOutput(o.name, parameters={"binary_data": o.binary}) for o in decoded.outputs],
    )


# ----------------------------------------------------------------------------- shared checks


def _check_count(count: int, limits: RequestLimits, *, what: str) -> None:
    if count == 0:
        raise InvalidInput(f"{what} is empty: send at least one image")
    if count > limits.max_images_per_request:
        raise InvalidInput(
            f"{what} has {count} images, more than max_images_per_request={limits.max_images_per_request}"
        )


def _check_elements(count: int, limits: RequestLimits, *, where: str) -> None:
    if count > limits.max_tensor_elements:
        raise InvalidInput(f"{where} has {count} elements, more than max_tensor_elements={limits.max_tensor_elements}")


def _check_chw(shape: tuple[int, ...], model: ModelShape, *, where: str, batch: bool = False) -> None:
    s = model.crop_size
    if tuple(shape) != (3, s, s):
        prefix = "N, " if batch else ""
        got = ", ".join(str(d) for d in shape)
        raise InvalidInput(f"{where} must have shape [{prefix}3, {s}, {s}] (preprocessed CHW), got [{prefix}{got}]")


def _check_finite(array: np.ndarray, *, where: str) -> None:
    if not np.isfinite(array).all():
        raise InvalidInput(f"{where} contains NaN or Inf; every value must be finite")


def _b64decode(value: Any, *, where: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidInput(f"{where} must be a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInput(f"{where} is not valid base64: {e}") from e


def _top_k(value: Any, model: ModelShape) -> int:
    if value is None:
        return min(model.default_top_k, model.num_classes)
    return _positive_int(value, "top_k", model.num_classes)


def _positive_int(value: Any, what: str, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        # Only ASCII digits: "²".isdigit() is True but int("²") fails.
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        else:
            raise InvalidInput(f"{what} must be an integer in 1..{upper}, got {value!r}")
    if not 1 <= value <= upper:
        raise InvalidInput(f"{what} must be an integer in 1..{upper}, got {value}")
    return int(value)


def _parameter(params: Any, key: str) -> Any:
    """A request/output parameter, from REST (dict) or gRPC (InferParameter map)."""
    if not params or key not in params:
        return None
    value = params[key]
    which = getattr(value, "WhichOneof", None)
    if which is not None:  # gRPC InferParameter
        choice = which("parameter_choice")
        return getattr(value, choice) if choice else None
    return value


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
