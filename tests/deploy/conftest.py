"""Shared fixtures: the repo's pinned tools, rendered overlays, recorded InferenceService documents,
and a fake cluster + clock that stand in for the Kubernetes API and time."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

VENV_BIN = Path(sys.executable).parent
KUBECTL = str(VENV_BIN / "kubectl")
OVERLAYS_DIR = REPO_ROOT / "inferenceservices" / "overlays"
OVERLAYS = sorted(p.name for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").is_file())
# Everything kustomize can build: the overlays plus the stand-alone kustomizations beside them.
BUILDS = [f"overlays/{o}" for o in OVERLAYS] + ["base", "runtime", "cluster-runtime"]
FIXTURES = Path(__file__).parent / "fixtures"


def crds_dir() -> Path:
    return Path(os.environ.get("KSERVE_CRDS_DIR", REPO_ROOT.parent / "shared" / "kserve-crds"))


def render(build: str) -> list[dict]:
    done = subprocess.run(
        [KUBECTL, "kustomize", str(REPO_ROOT / "inferenceservices" / build)], capture_output=True, text=True, check=True
    )
    return [d for d in yaml.safe_load_all(done.stdout) if d]


_rendered: dict[str, list[dict]] = {}


@pytest.fixture(scope="session")
def rendered():
    """build name -> rendered objects (rendered once per session)."""

    def get(build: str) -> list[dict]:
        if build not in _rendered:
            _rendered[build] = render(build)
        return copy.deepcopy(_rendered[build])

    return get


def recorded(name: str) -> dict:
    return yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())


class FakeCluster:
    """Serves recorded InferenceService documents in order (the last one repeats) and records calls."""

    def __init__(self, *docs: str, events: list[str] | None = None):
        self.docs = [recorded(d) for d in docs]
        self.patches: list[dict] = []
        self.applied: list[dict] = []
        self.deleted: list[dict] = []
        self.events = events or []
        self.gets = 0

    def get_isvc(self, namespace, name):
        self.gets += 1
        return copy.deepcopy(self.docs[0] if len(self.docs) == 1 else self.docs.pop(0))

    def patch_isvc(self, namespace, name, patch):
        self.patches.append(patch)
        return copy.deepcopy(self.docs[0])

    def apply(self, obj):
        self.applied.append(obj)

    def delete(self, obj):
        self.deleted.append(obj)
        return True

    def pod_events(self, namespace, isvc, revision, limit=10):
        return list(self.events)


class FakeClock:
    def __init__(self):
        self.t_s = 0.0
        self.sleeps_s: list[float] = []

    def now_s(self):
        return self.t_s

    def sleep(self, seconds):
        self.sleeps_s.append(seconds)
        self.t_s += seconds


@pytest.fixture
def clock():
    return FakeClock()
