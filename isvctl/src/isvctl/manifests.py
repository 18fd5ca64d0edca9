"""Render one deployed copy of an overlay with kustomize: the instance layer.

inferenceservices/instance/ is a kustomization over an overlay that sets the namespace and fixes
every selector and query after kustomize has named things. isvctl renders a copy of it in a
temporary folder with `resources` pointing at OVERLAY, `namespace`, `namePrefix` (NAME),
`images` (IMAGE) and, when the service already runs, a patch that keeps what it serves. Names and
namespaces are therefore kustomize's doing, never rewritten here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
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
    "PodDisruptionBudget",
    "ConfigMap",
    "ServingRuntime",
    "PodMonitor",
    "InferenceService",
]


@dataclass(frozen=True)
class Instance:
    overlay: str
    namespace: str
    name: str = ""  # a prefix for every object; empty: the names in inferenceservices/
    image: str | None = None


@dataclass(frozen=True)
class Pins:
    """What the InferenceService is to carry regardless of the overlay (a JSON merge patch)."""

    predictor: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.predictor)


def split_image(image: str) -> dict[str, str]:
    """registry/name:tag or registry/name@sha256:... -> kustomize's images fields."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return {"newName": name, "digest": digest}
    slash, colon = image.rfind("/"), image.rfind(":")
    if colon > slash:
        return {"newName": image[:colon], "newTag": image[colon + 1 :]}
    return {"newName": image}


def _runtime_image_name(manifests: Path) -> str:
    """The image name the runtime's own kustomization gives (the one place the image is named)."""
    doc = yaml.safe_load((manifests / "runtime" / "kustomization.yaml").read_text())
    return str(doc["images"][0]["newName"])


def kustomization(manifests: Path, instance: Instance, pins: Pins, workdir: Path) -> dict[str, Any]:
    overlay = manifests / "overlays" / instance.overlay
    if not (overlay / "kustomization.yaml").is_file():
        available = ", ".join(sorted(p.name for p in (manifests / "overlays").iterdir()))
        raise DeployError(f"no overlay {instance.overlay!r} in {manifests / 'overlays'} (have: {available})")
    template = yaml.safe_load((manifests / "instance" / "kustomization.yaml").read_text())
    generated: dict[str, Any] = dict(template)
    # kustomize accepts only relative paths to other kustomizations.
    generated["resources"] = [os.path.relpath(overlay, workdir), *template["resources"][1:]]
    generated["namespace"] = instance.namespace
    if instance.name:
        generated["namePrefix"] = f"{instance.name}-"
    if instance.image:
        generated["images"] = [{"name": _runtime_image_name(manifests), **split_image(instance.image)}]
    if pins:
        patch = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "pinned"},  # ignored: the target selects
            "spec": {"predictor": pins.predictor},
        }
        generated["patches"] = [{"target": {"kind": "InferenceService"}, "patch": yaml.safe_dump(patch)}]
    return generated


def render(manifests: Path, instance: Instance, kubectl: str, pins: Pins | None = None) -> list[dict[str, Any]]:
    source = manifests / "instance"
    with tempfile.TemporaryDirectory(prefix="isvctl-instance-") as tmp:
        workdir = Path(tmp)
        for path in source.iterdir():
            if path.name != "kustomization.yaml" and path.is_file():
                shutil.copy(path, workdir / path.name)
        (workdir / "kustomization.yaml").write_text(
            yaml.safe_dump(kustomization(manifests, instance, pins or Pins(), workdir), sort_keys=False)
        )
        try:
            done = subprocess.run([kubectl, "kustomize", str(workdir)], capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise DeployError(f"kubectl not found at {kubectl}: run `make deploy-tools`") from None
    if done.returncode != 0:
        raise DeployError(f"kustomize could not render overlay {instance.overlay}: {done.stderr.strip()}")
    objects = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    return sorted(objects, key=lambda o: _APPLY_ORDER.index(o["kind"]) if o["kind"] in _APPLY_ORDER else -1)


def one_of(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    if len(found) != 1:
        raise DeployError(f"an overlay must hold exactly one {kind}, found {len(found)}")
    return found[0]


def runtime_image(objects: list[dict[str, Any]]) -> str | None:
    runtime = one_of(objects, "ServingRuntime")
    return next((c.get("image") for c in runtime["spec"]["containers"] if c.get("name") == "kserve-container"), None)


def to_yaml(objects: list[dict[str, Any]]) -> str:
    return "---\n".join(yaml.safe_dump(o, sort_keys=False, default_flow_style=False) for o in objects)
