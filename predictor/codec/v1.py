"""KServe v1 (TF-Serving style) bodies: `{"instances": [...], "top_k": k}` in, `{"predictions": [...]}` out."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import torch
from kserve.errors import InvalidInput

from ..jobs import Image, Prediction, PreprocessedImage
from ..limits import RequestLimits
from .checks import b64decode, check_chw, check_count, check_elements, check_finite, encoded_image, first_line, top_k
from .request import DecodedRequest, ModelShape


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
    check_count(len(instances), limits, what='"instances"')
    k = top_k(body.get("top_k"), model)
    images = [_instance(i, inst, model, limits) for i, inst in enumerate(instances)]
    return DecodedRequest(images=images, top_k=k)


def _instance(i: int, inst: Any, model: ModelShape, limits: RequestLimits) -> Image:
    where = f"instances[{i}]"
    if isinstance(inst, str):
        # A bare base64 string: what many clients send when the instance is just the image.
        return encoded_image(b64decode(inst, where=where), where, limits)
    if isinstance(inst, dict):
        return _object_instance(inst, where, limits)
    if isinstance(inst, list):
        try:
            array = np.asarray(inst, dtype=np.float32)
        except (ValueError, TypeError, RecursionError) as e:
            raise InvalidInput(
                f"{where} must be a [3, {model.crop_size}, {model.crop_size}] array of numbers: {first_line(e)}"
            ) from e
        check_elements(array.size, limits, where=where)
        check_chw(array.shape, model, where=where)
        check_finite(array, where=where)
        return PreprocessedImage(torch.from_numpy(array))
    raise InvalidInput(f"{where} must be {_FORMS}; got {type(inst).__name__}")


# The instance forms clients send, as error messages list them.
_FORMS = (
    '{"image": {"b64": "<base64>"}} (KServe), {"b64": "<base64>"} (TF-Serving), {"data": "<base64>"} (TorchServe), '
    'a bare "<base64>" string, or a [3, S, S] array'
)


def _object_instance(inst: dict[str, Any], where: str, limits: RequestLimits) -> Image:
    # KServe's {"image": {"b64": ...}}, TF-Serving's {"b64": ...}, and TorchServe's {"data": ...}
    # (the body of KServe's TorchServe image samples).
    if set(inst) == {"image"} and isinstance(inst["image"], dict):
        inst, where = inst["image"], f"{where}.image"
    if set(inst) == {"b64"}:
        return encoded_image(b64decode(inst["b64"], where=f"{where}.b64"), where, limits)
    if set(inst) == {"data"}:
        return encoded_image(b64decode(inst["data"], where=f"{where}.data"), where, limits)
    raise InvalidInput(f"{where} must be {_FORMS}; got an object with keys {sorted(inst)}")


def encode_v1(predictions: list[Prediction], labels: tuple[str, ...]) -> dict[str, Any]:
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
