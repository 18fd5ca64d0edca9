"""Render an overlay with kustomize and point it at a name, namespace, image and model."""

from __future__ import annotations

import copy
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import DeployError

# Apply order: what others reference comes first; the InferenceService last.
_APPLY_ORDER = [
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "NetworkPolicy",
    "ConfigMap",
    "ServingRuntime",
    "PodMonitor",
    "InferenceService",
    "ScaledObject",
]
_CLUSTER_SCOPED = {"ClusterServingRuntime", "ClusterRole", "ClusterRoleBinding", "Namespace"}


@dataclass(frozen=True)
class Target:
    name: str
    namespace: str
    image: str | None = None
    storage_uri: str | None = None


def render(overlay_dir: Path, kubectl: str) -> list[dict[str, Any]]:
    if not (overlay_dir / "kustomization.yaml").is_file():
        raise DeployError(f"no overlay at {overlay_dir} (expected a kustomization.yaml there)")
    try:
        done = subprocess.run([kubectl, "kustomize", str(overlay_dir)], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise DeployError(f"kubectl not found at {kubectl}: run `make install`") from None
    if done.returncode != 0:
        raise DeployError(f"kustomize could not render {overlay_dir}: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def customize(objects: list[dict[str, Any]], target: Target) -> list[dict[str, Any]]:
    """Pure: the rendered objects, renamed/re-namespaced for `target`, in apply order."""
    out = []
    for original in objects:
        obj = copy.deepcopy(original)
        kind, meta = obj["kind"], obj["metadata"]
        if kind not in _CLUSTER_SCOPED:
            meta["namespace"] = target.namespace
        if kind == "RoleBinding":
            for subject in obj.get("subjects", []):
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = target.namespace
        if kind == "InferenceService":
            meta["name"] = target.name
            if target.storage_uri:
                obj["spec"]["predictor"]["model"]["storageUri"] = target.storage_uri
        if kind in ("ServingRuntime", "ClusterServingRuntime") and target.image:
            obj["spec"]["containers"][0]["image"] = target.image
        if kind == "ScaledObject":
            obj["spec"]["scaleTargetRef"]["name"] = f"{target.name}-predictor"
            for trigger in obj["spec"].get("triggers", []):
                query = trigger.get("metadata", {}).get("query")
                if query:
                    trigger["metadata"]["query"] = _relabel(query, target)
        out.append(obj)
    return sorted(out, key=lambda o: _APPLY_ORDER.index(o["kind"]) if o["kind"] in _APPLY_ORDER else -1)


def _relabel(promql: str, target: Target) -> str:
    promql = re.sub(r'namespace="[^"]*"', f'namespace="{target.namespace}"', promql)
    return re.sub(r'isvc="[^"]*"', f'isvc="{target.name}"', promql)


def isvc_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == "InferenceService"]
    if len(found) != 1:
        raise DeployError(f"an overlay must hold exactly one InferenceService, found {len(found)}")
    return found[0]


def to_yaml(objects: list[dict[str, Any]]) -> str:
    return "---\n".join(yaml.safe_dump(o, sort_keys=False, default_flow_style=False) for o in objects)
