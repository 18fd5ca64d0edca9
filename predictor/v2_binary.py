"""The v2 binary tensor data extension over REST, decoded defensively.

KServe's own `InferRequest.from_bytes` turns every binary tensor into a Python list
(slow for images) and cannot carry non-UTF-8 BYTES such as JPEG files; malformed
headers reach it as KeyErrors (500). Here the raw bytes stay raw, and every way the
JSON header or the binary section can disagree is a 400 that says how.
"""

from __future__ import annotations

from typing import Any

import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

HEADER = "inference-header-content-length"


def json_length(headers: dict[str, str], body_bytes: int) -> int:
    value = headers.get(HEADER)
    if value is None:
        raise InvalidInput(f"binary request body without the '{HEADER}' header")
    try:
        length = int(value.strip())
    except ValueError as e:
        raise InvalidInput(f"'{HEADER}' must be an integer, got {value[:40]!r}") from e
    if length < 0:
        raise InvalidInput(f"'{HEADER}' must be >= 0, got {length}")
    if length > body_bytes:
        raise InvalidInput(f"'{HEADER}' is {length} but the body has only {body_bytes} bytes")
    return length


def parse(body: bytes, headers: dict[str, str], model_name: str) -> InferRequest:
    length = json_length(headers, len(body))
    try:
        header = orjson.loads(body[:length])
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"the JSON part of the binary request is not valid JSON: {e}") from e
    if not isinstance(header, dict):
        raise InvalidInput("the JSON part of the binary request must be an object")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list):
        raise InvalidInput('the request must have an "inputs" list')
    offset, inputs = length, []
    for i, spec in enumerate(raw_inputs):
        tensor, offset = _input(spec, i, body, offset)
        inputs.append(tensor)
    if offset != len(body):
        raise InvalidInput(
            f"binary data is {len(body) - length} bytes but the inputs' binary_data_size add up to {offset - length}"
        )
    outputs = header.get("outputs")
    if outputs is not None and not (
        isinstance(outputs, list)
        and all(
            isinstance(o, dict) and isinstance(o.get("name"), str) and isinstance(o.get("parameters") or {}, dict)
            for o in outputs
        )
    ):
        raise InvalidInput('"outputs" must be a list of objects with a "name" and optional "parameters" object')
    parameters = header.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidInput('"parameters" must be an object')
    return InferRequest(
        model_name=model_name,
        request_id=_optional_str(header.get("id"), "id"),
        infer_inputs=inputs,
        parameters=parameters,
        request_outputs=[RequestedOutput(o["name"], parameters=o.get("parameters") or {}) for o in outputs]
        if outputs
        else None,
    )


def _input(spec: Any, i: int, body: bytes, offset: int) -> tuple[InferInput, int]:
    if not isinstance(spec, dict):
        raise InvalidInput(f"inputs[{i}] must be an object")
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise InvalidInput(f'inputs[{i}] needs a string "name" and "datatype"')
    if not isinstance(shape, list):
        raise InvalidInput(f'input {name!r} needs a "shape" list')
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"input {name!r} parameters must be an object")
    tensor = InferInput(name=name, shape=shape, datatype=datatype, parameters=parameters)
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in spec:
            raise InvalidInput(f'input {name!r} has neither "data" nor a binary_data_size parameter')
        tensor.data = spec["data"]
        return tensor, offset
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInput(f"input {name!r} binary_data_size must be an integer >= 0, got {size!r}")
    if offset + size > len(body):
        raise InvalidInput(
            f"input {name!r} binary_data_size is {size} but only {len(body) - offset} bytes of binary data remain"
        )
    tensor._raw_data = body[offset : offset + size]
    return tensor, offset + size


def _optional_str(value: Any, key: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidInput(f'"{key}" must be a string')
