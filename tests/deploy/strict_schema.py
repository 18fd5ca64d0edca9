"""Strict validation of KServe objects against the KServe SDK's generated models (kserve==0.21.0).

A second opinion beside the CRD schema (crd_schema.py): every key must be a known attribute of the
model of its place, so a misspelt field fails here too.
"""

from __future__ import annotations

import importlib
import re

import kserve.models
import kubernetes.client.models

KIND_TO_MODEL = {
    "InferenceService": kserve.models.V1beta1InferenceService,
    "ServingRuntime": kserve.models.V1alpha1ServingRuntime,
    "ClusterServingRuntime": kserve.models.V1alpha1ClusterServingRuntime,
}
_PRIMITIVES = {
    "str": str,
    "int": int,
    "bool": bool,
    "float": (int, float),
    "object": object,
    "datetime": str,
    "date": str,
    "StrictStr": str,
    "StrictInt": int,
    "StrictBool": bool,
    # Go types that marshal themselves to strings (apis.URL, apis.VolatileTime).
    "KnativeURL": str,
    "KnativeVolatileTime": str,
    "V1Time": str,
    # A resource.Quantity-like int-or-string the SDK does not generate (autoScaling targets).
    "V1beta1MetricQuantity": (str, int),
}

# Referenced by the SDK but not generated into it: Knative's TrafficTarget (serving.knative.dev/v1).
_MISSING_MODELS = {
    "KnativeDevServingPkgApisServingV1TrafficTarget": {
        "tag": "str",
        "revisionName": "str",
        "configurationName": "str",
        "latestRevision": "bool",
        "percent": "int",
        "url": "KnativeURL",
    },
}


def _model_class(name: str):
    # kserve's generator names some core types by Go package (K8sIoApiAppsV1DeploymentStrategy);
    # the kubernetes client calls the same type V1DeploymentStrategy.
    if m := re.fullmatch(r"K8sIoApi[A-Z][a-z]+(V\d.*)", name):
        name = m.group(1)
    found = getattr(kserve.models, name, None) or getattr(kubernetes.client.models, name, None)
    if found is None:
        # Knative's types are generated but not exported from kserve.models.
        module = importlib.import_module("kserve.models." + re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", name).lower())
        found = getattr(module, name)
    return found


def sdk_errors(obj: dict) -> list[str]:
    """Walk `obj` against the SDK model of its kind; every key must be a known attribute."""
    errors: list[str] = []
    _walk(obj, KIND_TO_MODEL[obj["kind"]].__name__, "", errors)
    return errors


def _walk(value, type_name: str, path: str, errors: list[str]) -> None:
    if value is None:
        return
    # kserve spells containers list[X] / dict(str, X); the kubernetes client List[X] / Dict[str, X].
    if m := re.fullmatch(r"[Ll]ist\[(.+)\]", type_name):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _walk(item, m.group(1), f"{path}[{i}]", errors)
        return
    if m := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", type_name):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map, got {type(value).__name__}")
            return
        for key, item in value.items():
            _walk(item, m.group(1) or m.group(2), f"{path}.{key}", errors)
        return
    if type_name in _PRIMITIVES:
        if not isinstance(value, _PRIMITIVES[type_name]) or (type_name == "int" and isinstance(value, bool)):
            errors.append(f"{path}: expected {type_name}, got {value!r}")
        return
    if type_name in _MISSING_MODELS:
        fields = _MISSING_MODELS[type_name]
        for key, item in value.items():
            if key not in fields:
                errors.append(f"{path}.{key}: unknown field of {type_name}")
            else:
                _walk(item, fields[key], f"{path}.{key}", errors)
        return
    model = _model_class(type_name)
    if not isinstance(value, dict):
        errors.append(f"{path}: expected an object ({type_name}), got {value!r}")
        return
    json_to_attr = {json_key: attr for attr, json_key in model.attribute_map.items()}
    for key, item in value.items():
        if key not in json_to_attr:
            errors.append(f"{path}.{key}: unknown field of {type_name}".lstrip("."))
            continue
        _walk(item, model.openapi_types[json_to_attr[key]], f"{path}.{key}".lstrip("."), errors)
