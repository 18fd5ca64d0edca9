"""Open Inference Protocol (v2) requests and responses, REST and gRPC alike: one input
(`image`, `pixels` or `tensor`) in; `class_names`, `probabilities`, `class_indices` out,
with Triton's classification extension and binary outputs."""

from __future__ import annotations

from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse, RequestedOutput

from ..jobs import Image, Prediction
from ..limits import RequestLimits
from .checks import check_count, parameter, positive_int, top_k
from .request import (
    INPUT_DATATYPES,
    INPUT_ENCODED,
    INPUT_PIXELS,
    OUTPUT_DATATYPES,
    OUTPUT_NAMES,
    OUTPUT_PROBABILITIES,
    PIXELS_CROPPED,
    DecodedRequest,
    ModelShape,
    OutputRequest,
)
from .tensors import check_shape, encoded_images, numeric_array, pixel_images, preprocessed_images


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
    role = _role(name, datatype)
    expected = INPUT_DATATYPES[role]
    if datatype != expected:
        raise InvalidInput(f"input {name!r} must have datatype {expected}, got {datatype}")
    shape = check_shape(tensor.shape, name)
    images: list[Image]
    # Every message below names the input as the client did: an `input-0` stays `input-0`.
    if role == INPUT_ENCODED:
        images = encoded_images(tensor, shape, limits)
    else:
        array = numeric_array(tensor, shape, datatype, limits)
        if role == INPUT_PIXELS:
            crop_size = model.crop_size if _cropped(tensor.parameters, name) else None
            images = pixel_images(array, name, limits, crop_size)
        else:
            images = preprocessed_images(array, name, model)
    check_count(len(images), limits, what=f"input {name!r}")
    return DecodedRequest(
        images=images,
        top_k=top_k(parameter(request.parameters, "top_k"), model),
        outputs=_requested_outputs(request, model),
        v2_request=request,
    )


def _cropped(parameters: Any, name: str) -> bool:
    value = parameter(parameters, PIXELS_CROPPED)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"input {name!r} parameter {PIXELS_CROPPED!r} must be true or false, got {value!r}")
    return value


def _role(name: str, datatype: str) -> str:
    """Which of the model's inputs the request's one tensor is. By name; and a BYTES tensor under
    another name (clients default to names like `input-0`) is the one input that takes BYTES."""
    if name in INPUT_DATATYPES:
        return name
    if datatype == "BYTES" and len(_BYTES_INPUTS) == 1:
        return _BYTES_INPUTS[0]
    raise InvalidInput(
        f"unknown input {name!r}; this model accepts "
        f"{', '.join(f'{n!r} ({t})' for n, t in INPUT_DATATYPES.items())}"
        + (f"; a BYTES input under another name is taken as {_BYTES_INPUTS[0]!r}" if len(_BYTES_INPUTS) == 1 else "")
    )


_BYTES_INPUTS = [n for n, t in INPUT_DATATYPES.items() if t == "BYTES"]


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
        class_count = parameter(out.parameters, "classification")
        if class_count is None:
            class_count = parameter(out.parameters, "class_count")
        if class_count is not None:
            class_count = positive_int(class_count, f"output {out.name!r} class_count", model.num_classes)
        binary = parameter(out.parameters, "binary_data")
        outputs.append(OutputRequest(out.name, class_count, binary_default if binary is None else bool(binary)))
    return outputs


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
        data: np.ndarray
        if out.class_count:
            data, datatype = _classification(predictions, labels, out.class_count), "BYTES"
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


def _classification(predictions: list[Prediction], labels: tuple[str, ...], class_count: int) -> np.ndarray:
    """Triton's classification extension: "score:index:label" strings, k per image."""
    rows: list[list[Any]] = [
        [
            f"{s:f}:{i}:{labels[i]}".encode()
            for s, i in zip(p.probabilities[:class_count], p.indices[:class_count], strict=False)
        ]
        for p in predictions
    ]
    return np.array(rows, dtype=np.object_)
