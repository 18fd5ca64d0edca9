"""Shared helpers: the pinned kubectl, rendered instances, and a fake cluster + clock that stand in
for the Kubernetes API and time. The cluster's contents come from scenes.py (what the controllers
write), never from hand-made documents."""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path
from typing import Any

import pytest

import predictor
from isvctl import cli, manifests

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = REPO_ROOT / "inferenceservices"
VENV_BIN = Path(sys.executable).parent
KUBECTL = str(VENV_BIN / "kubectl")
# The image the manifests name unless IMAGE is given: tagged with the release.
RUNTIME_IMAGE = f"ghcr.io/example/image-classifier-predictor:{predictor.__version__}"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
# What the README names, and the Knative feature flags each needs in Knative mode (README, Prerequisites).
KNATIVE_FLAGS_NEEDED = {
    "cpu": (),
    "gpu": (),
    "raw": (),
    "raw-keda": (),
    "serverless": ("kubernetes.podspec-affinity", "kubernetes.podspec-tolerations"),
    "canary": ("kubernetes.podspec-affinity", "kubernetes.podspec-tolerations"),
    "transformer": (),
    "transformer-collocated": (),
}


@functools.cache
def _render(overlay: str, name: str, namespace: str) -> tuple[dict[str, Any], ...]:
    return tuple(manifests.render(MANIFESTS, manifests.Instance(overlay, namespace, name), KUBECTL))


def render(overlay: str, name: str = "", namespace: str = "ml-serving") -> list[dict[str, Any]]:
    """The objects `make deploy OVERLAY=overlay NAME=name NAMESPACE=namespace` applies."""
    return copy.deepcopy(list(_render(overlay, name, namespace)))


def kustomize(path: Path) -> list[dict[str, Any]]:
    """Any kustomization in the repository, built with the pinned kubectl (for trees beside the
    overlays, e.g. examples that admission.admit and crd_schema.errors then check)."""
    import subprocess

    import yaml

    done = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return manifests.one_of(objects, kind)


class FakeCluster:
    """Serves moments in order: each GET of the InferenceService moves to the next moment (the last
    one repeats); the other objects of a poll come from the same moment. Records every write."""

    def __init__(self, *moments: list[dict[str, Any]], events: list[str] | None = None):
        self.moments = [copy.deepcopy(m) for m in moments]
        self.current = self.moments[0] if self.moments else []
        self.patches: list[dict[str, Any]] = []
        self.applied: list[dict[str, Any]] = []
        self.deleted: list[dict[str, Any]] = []
        self.event_lines = events or []
        self.isvc_gets = 0

    def _find(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((o for o in self.current if o["kind"] == kind and o["metadata"]["name"] == name), None)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        if kind == "InferenceService":
            self.isvc_gets += 1
            if len(self.moments) > 1:
                self.current = self.moments.pop(0)
            elif self.moments:
                self.current = self.moments[0]
        found = self._find(kind, name)
        return copy.deepcopy(found) if found else None

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        key, _, value = label_selector.partition("=")
        return [
            copy.deepcopy(o)
            for o in self.current
            if o["kind"] == kind and (o["metadata"].get("labels") or {}).get(key) == value
        ]

    def patch(self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        from .scenes import merge

        self.patches.append(patch)
        return merge(self._find(kind, name) or {}, patch)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(obj)
        return obj

    def delete(self, obj: dict[str, Any]) -> bool:
        self.deleted.append(obj)
        return True

    def events(self, namespace: str, names: list[str], limit: int = 10) -> list[str]:
        return list(self.event_lines)


class FakeClock:
    def __init__(self):
        self.t_s = 0.0
        self.sleeps_s: list[float] = []

    def now_s(self) -> float:
        return self.t_s

    def sleep(self, seconds: float) -> None:
        self.sleeps_s.append(seconds)
        self.t_s += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def isvctl(capsys, argv: list[str], cluster: FakeCluster | None = None, *, clock=None, gate=None, code: int = 0):
    """Run the CLI against the fake cluster; returns (stdout, stderr) after checking the exit code."""
    result = cli.main(
        [*argv, "--kubectl", KUBECTL, "--manifests", str(MANIFESTS), "--poll-s", "5"],
        cluster_factory=lambda: cluster if cluster is not None else FakeCluster(),
        clock=clock or FakeClock(),
        gate=gate,
    )
    out = capsys.readouterr()
    assert result == code, out.err or out.out
    return out.out, out.err
