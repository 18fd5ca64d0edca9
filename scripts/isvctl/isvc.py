"""Read an InferenceService document (spec + status) into the facts the deploy tool decides on."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

GROUP = "serving.kserve.io"
API_VERSION = f"{GROUP}/v1beta1"
DEPLOYMENT_MODE_ANNOTATION = f"{GROUP}/deploymentMode"
# Where `canary` records what to roll back to: Standard mode has no revision history of its own.
PREVIOUS_STORAGE_URI_ANNOTATION = "isvctl.image-classifier.dev/previous-storage-uri"
PREVIOUS_IMAGE_ANNOTATION = "isvctl.image-classifier.dev/previous-image"


class Mode(enum.Enum):
    SERVERLESS = "Serverless"
    STANDARD = "Standard"

    @property
    def splits_traffic(self) -> bool:
        # Only Knative keeps old revisions alive beside the new one; a Deployment rolls all pods.
        return self is Mode.SERVERLESS


def _mode(value: str | None) -> Mode | None:
    if value in ("Serverless",):
        return Mode.SERVERLESS
    # "RawDeployment" is the pre-0.15 name of Standard mode, still accepted by KServe.
    if value in ("Standard", "RawDeployment"):
        return Mode.STANDARD
    return None


@dataclass(frozen=True)
class Traffic:
    revision: str
    percent: int
    tag: str | None
    latest: bool


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class State:
    name: str
    namespace: str
    mode: Mode
    generation: int
    observed_generation: int
    storage_uri: str | None
    image: str | None
    canary_percent: int | None
    annotations: dict[str, str]
    url: str | None
    conditions: dict[str, Condition]
    traffic: tuple[Traffic, ...] = ()
    latest_created: str | None = None
    latest_ready: str | None = None
    latest_rolledout: str | None = None
    previous_rolledout: str | None = None
    model_transition: str | None = None
    model_failure: str | None = field(default=None)

    @property
    def ready(self) -> bool:
        cond = self.conditions.get("Ready")
        return cond is not None and cond.status == "True"

    @property
    def up_to_date(self) -> bool:
        return self.observed_generation >= self.generation

    def percent_of(self, revision: str | None) -> int:
        return sum(t.percent for t in self.traffic if t.revision == revision)

    def failure(self) -> str | None:
        """The controller's own words for a terminal failure, or None while all is well or pending."""
        if self.model_transition in ("BlockedByFailedLoad", "InvalidSpec"):
            return self.model_failure or f"model status {self.model_transition}"
        for cond in self.conditions.values():
            if cond.status == "False" and cond.reason in _TERMINAL_REASONS:
                return f"{cond.type}: {cond.reason}: {cond.message}".rstrip(": ")
        return None


# Reasons after which waiting longer does not help (Knative's and Kubernetes' wording).
_TERMINAL_REASONS = {
    "RevisionFailed",
    "RevisionMissing",
    "ContainerMissing",
    "ProgressDeadlineExceeded",
    "InvalidSpec",
    "ModelLoadFailed",
}


def parse(doc: dict[str, Any]) -> State:
    meta = doc.get("metadata", {})
    spec = doc.get("spec", {}).get("predictor", {})
    model = spec.get("model", {})
    status = doc.get("status", {})
    annotations = meta.get("annotations") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    mode = (
        _mode(status.get("deploymentMode"))
        or _mode(annotations.get(DEPLOYMENT_MODE_ANNOTATION))
        or Mode.SERVERLESS  # KServe's default when neither status nor annotation says otherwise
    )
    conditions = {
        c["type"]: Condition(c["type"], c.get("status", "Unknown"), c.get("reason", ""), c.get("message", ""))
        for c in status.get("conditions") or []
    }
    traffic = tuple(
        Traffic(t.get("revisionName", ""), int(t.get("percent", 0)), t.get("tag"), bool(t.get("latestRevision")))
        for t in predictor.get("traffic") or []
    )
    model_status = status.get("modelStatus") or {}
    failure_info = model_status.get("lastFailureInfo") or {}
    return State(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        mode=mode,
        generation=int(meta.get("generation", 0)),
        observed_generation=int(status.get("observedGeneration", 0)),
        storage_uri=model.get("storageUri"),
        image=model.get("image"),
        canary_percent=spec.get("canaryTrafficPercent"),
        annotations=dict(annotations),
        url=status.get("url"),
        conditions=conditions,
        traffic=traffic,
        latest_created=predictor.get("latestCreatedRevision"),
        latest_ready=predictor.get("latestReadyRevision"),
        latest_rolledout=predictor.get("latestRolledoutRevision"),
        previous_rolledout=predictor.get("previousRolledoutRevision"),
        model_transition=model_status.get("transitionStatus"),
        model_failure=(
            f"{failure_info.get('reason', '')}: {failure_info.get('message', '')}".strip(": ") if failure_info else None
        ),
    )
