"""Strict validators for KServe objects: the CRD's openAPIV3Schema and the SDK's generated models.

Both reject fields they do not know. The API server would silently prune a misspelt field
(`canaryTrafficPercnt`), so a typo would deploy as if the line were absent; here it fails a test.
"""

from __future__ import annotations

import copy
import functools
import importlib
import re
from pathlib import Path

import jsonschema
import kserve.models
import kubernetes.client.models
import yaml

KIND_TO_MODEL = {
    "InferenceService": kserve.models.V1beta1InferenceService,
    "ServingRuntime": kserve.models.V1alpha1ServingRuntime,
    "ClusterServingRuntime": kserve.models.V1alpha1ClusterServingRuntime,
}
CRD_FILES = {
    "InferenceService": "serving.kserve.io_inferenceservices.yaml",
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml",
    "ClusterServingRuntime": "serving.kserve.io_clusterservingruntimes.yaml",
}


def _closed(schema):
    """Copy of a CRD schema where objects with declared properties allow no others (as kubectl
    --validate=strict does), except where the schema itself preserves unknown fields."""
    if isinstance(schema, dict):
        schema = {k: _closed(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


@functools.cache
def crd_validator(crds_dir: Path, kind: str, version: str) -> jsonschema.Validator:
    crd = yaml.safe_load((crds_dir / CRD_FILES[kind]).read_text())
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _closed(copy.deepcopy(entry["schema"]["openAPIV3Schema"]))
    return jsonschema.Draft7Validator(schema)


def crd_errors(crds_dir: Path, obj: dict) -> list[str]:
    version = obj["apiVersion"].split("/")[1]
    validator = crd_validator(crds_dir, obj["kind"], version)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


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
