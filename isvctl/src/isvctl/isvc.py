"""Read an InferenceService document (spec + status) into the facts the deploy tool decides on.

The status fields are the ones KServe's controller writes (kserve/kserve,
pkg/apis/serving/v1beta1/inference_service_status.go). Two of them are not what they look like:
`observedGeneration` is copied from the Knative Service or the Deployment (PropagateStatus,
PropagateRawStatus), never the InferenceService's own generation, and `modelStatus` is judged from
one arbitrary pod (PropagateModelStatus). The tool therefore reads rollouts from the workload KServe
writes (workload.py), and uses these only for revisions, traffic, canaries and failure messages.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

GROUP = "serving.kserve.io"
API_VERSION = f"{GROUP}/v1beta1"
KIND = "InferenceService"
DEPLOYMENT_MODE_ANNOTATION = f"{GROUP}/deploymentMode"
AUTOSCALER_CLASS_ANNOTATION = f"{GROUP}/autoscalerClass"
KNATIVE_CLASS_ANNOTATION = "autoscaling.knative.dev/class"
# KServe labels every predictor pod with its InferenceService (buildObjectMeta in predictor.go).
POD_LABEL = f"{GROUP}/inferenceservice"
# What to roll back to, kept in the predictor's own annotations: they reach only the new model's
# pod template (a revision, or a canary's Deployment), never restart the stable pods, and travel
# with the canary when it is promoted.
PREVIOUS_STORAGE_URI_ANNOTATION = "isvctl.image-classifier.dev/previous-storage-uri"
PREVIOUS_IMAGE_ANNOTATION = "isvctl.image-classifier.dev/previous-image"


class Mode(enum.Enum):
    KNATIVE = "Knative"
    STANDARD = "Standard"


def parse_mode(value: str | None) -> Mode | None:
    """KServe 0.21's names, and the older ones its webhook still rewrites (ParseDeploymentMode)."""
    if value in ("Knative", "Serverless"):
        return Mode.KNATIVE
    if value in ("Standard", "RawDeployment"):
        return Mode.STANDARD
    return None


def predictor_service_name(isvc: str, predictor: str = "") -> str:
    """The Deployment / Knative Service KServe names for a predictor (constants.PredictorServiceName)."""
    return f"{isvc}-{predictor}-predictor" if predictor else f"{isvc}-predictor"


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
class Canary:
    """One entry of spec.canary (Standard mode): a named predictor that gets trafficPercent."""

    name: str
    percent: int
    storage_uri: str | None
    image: str | None
    annotations: dict[str, str]

    @classmethod
    def parse(cls, entry: dict[str, Any]) -> Canary:
        predictor = entry.get("predictor") or {}
        model = predictor.get("model") or {}
        return cls(
            name=predictor.get("name", ""),
            percent=int(entry.get("trafficPercent", 0)),
            storage_uri=model.get("storageUri"),
            image=model.get("image"),
            annotations=dict(predictor.get("annotations") or {}),
        )


@dataclass(frozen=True)
class CanaryStatus:
    """One entry of status.canaryStatuses: what KServe reports of a canary."""

    name: str
    ready: bool
    percent: int

    @classmethod
    def parse(cls, entry: dict[str, Any]) -> CanaryStatus:
        return cls(entry.get("name", ""), bool(entry.get("ready")), int(entry.get("trafficPercent", 0)))


@dataclass(frozen=True)
class State:
    name: str
    namespace: str
    generation: int
    annotations: dict[str, str]
    mode: Mode | None
    storage_uri: str | None
    image: str | None
    predictor_name: str
    predictor_annotations: dict[str, str]
    model_format: dict[str, Any]
    canary_percent: int | None
    canaries: tuple[Canary, ...]
    min_replicas: int | None
    max_replicas: int | None
    scale_metric: str | None
    scale_target: int | None
    auto_scaling: dict[str, Any] | None
    url: str | None
    conditions: dict[str, Condition]
    traffic: tuple[Traffic, ...] = ()
    latest_created: str | None = None
    latest_ready: str | None = None
    latest_rolledout: str | None = None
    previous_rolledout: str | None = None
    model_transition: str | None = None
    model_failure: str | None = None
    canary_statuses: tuple[CanaryStatus, ...] = field(default=())

    @property
    def ready(self) -> bool:
        cond = self.conditions.get("Ready")
        return cond is not None and cond.status == "True"

    @property
    def workload_name(self) -> str:
        return predictor_service_name(self.name, self.predictor_name)

    @property
    def previous_storage_uri(self) -> str | None:
        return self.predictor_annotations.get(PREVIOUS_STORAGE_URI_ANNOTATION)

    @property
    def previous_image(self) -> str | None:
        return self.predictor_annotations.get(PREVIOUS_IMAGE_ANNOTATION)

    @property
    def has_previous(self) -> bool:
        return PREVIOUS_STORAGE_URI_ANNOTATION in self.predictor_annotations or (
            PREVIOUS_IMAGE_ANNOTATION in self.predictor_annotations
        )

    @property
    def knative_canary_in_progress(self) -> bool:
        """canaryTrafficPercent 1..100 with a revision other than the rolled-out one taking it."""
        return bool(self.canary_percent) and self.latest_created != self.latest_rolledout

    def percent_of(self, revision: str | None) -> int:
        return sum(t.percent for t in self.traffic if t.revision == revision)

    def canary_status(self, name: str) -> CanaryStatus | None:
        return next((c for c in self.canary_statuses if c.name == name), None)

    def failure(self) -> str | None:
        """The controller's own words for a terminal failure, or None while all is well or pending."""
        if self.model_transition in ("BlockedByFailedLoad", "InvalidSpec") and self.model_failure:
            return self.model_failure
        for cond in self.conditions.values():
            if cond.status == "False" and cond.reason in _TERMINAL_REASONS:
                return f"{cond.type}: {cond.reason}: {cond.message}".rstrip(": ")
        return None


# Reasons after which waiting longer does not help. ReconcileFailed: KServe could not write the
# workload, e.g. Knative's webhook refused it (predictor.go Reconcile); the others are Knative's.
_TERMINAL_REASONS = {
    "ReconcileFailed",
    "RevisionFailed",
    "RevisionMissing",
    "ContainerMissing",
    "ProgressDeadlineExceeded",
}


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def parse(doc: dict[str, Any]) -> State:
    meta = doc.get("metadata") or {}
    spec = (doc.get("spec") or {}).get("predictor") or {}
    model = spec.get("model") or {}
    status = doc.get("status") or {}
    annotations = meta.get("annotations") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    conditions = {
        c["type"]: Condition(c["type"], c.get("status", "Unknown"), c.get("reason", ""), c.get("message", ""))
        for c in status.get("conditions") or []
    }
    traffic = tuple(
        Traffic(t.get("revisionName", ""), int(t.get("percent", 0)), t.get("tag"), bool(t.get("latestRevision")))
        for t in predictor.get("traffic") or []
    )
    canaries = tuple(Canary.parse(c) for c in (doc.get("spec") or {}).get("canary") or [])
    model_status = status.get("modelStatus") or {}
    failure_info = model_status.get("lastFailureInfo") or {}
    return State(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        generation=int(meta.get("generation", 0)),
        annotations=dict(annotations),
        # The mode KServe resolved (status) wins over the annotation: it cannot change afterwards.
        mode=parse_mode(status.get("deploymentMode")) or parse_mode(annotations.get(DEPLOYMENT_MODE_ANNOTATION)),
        storage_uri=model.get("storageUri"),
        image=model.get("image"),
        predictor_name=spec.get("name") or "",
        predictor_annotations=dict(spec.get("annotations") or {}),
        model_format=dict(model.get("modelFormat") or {}),
        canary_percent=_int_or_none(spec.get("canaryTrafficPercent")),
        canaries=canaries,
        min_replicas=_int_or_none(spec.get("minReplicas")),
        max_replicas=_int_or_none(spec.get("maxReplicas")),
        scale_metric=spec.get("scaleMetric"),
        scale_target=_int_or_none(spec.get("scaleTarget")),
        auto_scaling=spec.get("autoScaling"),
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
        canary_statuses=tuple(CanaryStatus.parse(c) for c in status.get("canaryStatuses") or []),
    )
