"""What KServe writes for a predictor, read the way Kubernetes and Knative report it.

KServe turns the InferenceService into a Knative Service (Knative mode) or a Deployment (Standard
mode), both named <isvc>-predictor (<isvc>-<name>-predictor for a named predictor or a canary), and
copies the storage URI into the pod template's annotations (addStorageInitializerAnnotations,
kserve/kserve pkg/controller/v1beta1/inferenceservice/components/predictor.go). That annotation and
the container image tell whether the workload already carries the spec we just sent; the
workload's own status then tells whether it has rolled out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .progress import Progress, done, failed, wait

STORAGE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
CONTAINER = "kserve-container"
KNATIVE_API_VERSION = "serving.knative.dev/v1"
HTTPROUTE_API_VERSION = "gateway.networking.k8s.io/v1"


@dataclass(frozen=True)
class Template:
    """The facts of a pod template (or a pod) that identify which spec it was built from."""

    storage_uri: str | None
    image: str | None
    annotations: dict[str, str]


def template_of(meta: dict[str, Any] | None, spec: dict[str, Any] | None) -> Template:
    annotations = (meta or {}).get("annotations") or {}
    containers = (spec or {}).get("containers") or []
    image = next((c.get("image") for c in containers if c.get("name") == CONTAINER), None)
    return Template(annotations.get(STORAGE_URI_ANNOTATION), image, dict(annotations))


@dataclass(frozen=True)
class Expected:
    """What the pods of the spec we sent carry; None: not checked."""

    storage_uri: str | None = None
    image: str | None = None
    annotations: tuple[tuple[str, str], ...] = ()

    def matches(self, template: Template) -> bool:
        return (
            (self.storage_uri is None or template.storage_uri == self.storage_uri)
            and (self.image is None or template.image == self.image)
            and all(template.annotations.get(k) == v for k, v in self.annotations)
        )

    def describe(self) -> str:
        parts = [p for p in (self.storage_uri, self.image) if p]
        parts += [f"{k}={v}" for k, v in self.annotations]
        return ", ".join(parts) or "the new spec"


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


@dataclass(frozen=True)
class Deployment:
    name: str
    generation: int
    observed_generation: int
    replicas: int | None
    status_replicas: int
    updated: int
    available: int
    template: Template
    progressing_reason: str
    progressing_message: str


def deployment(doc: dict[str, Any]) -> Deployment:
    spec, status = doc.get("spec") or {}, doc.get("status") or {}
    tpl = spec.get("template") or {}
    progressing = _condition(status, "Progressing")
    return Deployment(
        name=doc["metadata"]["name"],
        generation=int(doc["metadata"].get("generation", 0)),
        observed_generation=int(status.get("observedGeneration", 0)),
        replicas=spec.get("replicas"),
        status_replicas=int(status.get("replicas", 0)),
        updated=int(status.get("updatedReplicas", 0)),
        available=int(status.get("availableReplicas", 0)),
        template=template_of(tpl.get("metadata"), tpl.get("spec")),
        progressing_reason=progressing.get("reason", ""),
        progressing_message=progressing.get("message", ""),
    )


def rollout_status(d: Deployment) -> Progress:
    """`kubectl rollout status` for a Deployment, message for message (k8s.io/kubectl
    pkg/polymorphichelpers/rollout_status.go, DeploymentStatusViewer.Status)."""
    if d.generation > d.observed_generation:
        return wait(f"Waiting for deployment {d.name!r} spec update to be observed")
    if d.progressing_reason == "ProgressDeadlineExceeded":
        return failed(f"deployment {d.name!r} exceeded its progress deadline: {d.progressing_message}")
    if d.replicas is not None and d.updated < d.replicas:
        return wait(f"deployment {d.name!r}: {d.updated} out of {d.replicas} new replicas have been updated")
    if d.status_replicas > d.updated:
        return wait(f"deployment {d.name!r}: {d.status_replicas - d.updated} old replicas are pending termination")
    if d.available < d.updated:
        return wait(f"deployment {d.name!r}: {d.available} of {d.updated} updated replicas are available")
    return done(f"deployment {d.name!r} successfully rolled out")


@dataclass(frozen=True)
class KnativeService:
    name: str
    generation: int
    observed_generation: int
    template: Template
    latest_created: str | None
    latest_ready: str | None


def knative_service(doc: dict[str, Any]) -> KnativeService:
    spec, status = doc.get("spec") or {}, doc.get("status") or {}
    tpl = spec.get("template") or {}
    return KnativeService(
        name=doc["metadata"]["name"],
        generation=int(doc["metadata"].get("generation", 0)),
        observed_generation=int(status.get("observedGeneration", 0)),
        template=template_of(tpl.get("metadata"), tpl.get("spec")),
        latest_created=status.get("latestCreatedRevisionName"),
        latest_ready=status.get("latestReadyRevisionName"),
    )


# Container states after which the pod will not become ready without a change to its spec.
_TERMINAL_WAITING = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
}


@dataclass(frozen=True)
class Pod:
    name: str
    phase: str
    ready: bool
    template: Template
    restarts: int
    problem: str | None  # terminal: the container cannot start or keeps crashing
    pending: str | None  # not scheduled yet, with the scheduler's reason


def _container_problem(status: dict[str, Any]) -> str | None:
    waiting = (status.get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in _TERMINAL_WAITING:
        last = ((status.get("lastState") or {}).get("terminated")) or {}
        why = last.get("message") or waiting.get("message") or ""
        exit_code = f" (exit code {last['exitCode']})" if "exitCode" in last else ""
        return f"container {status.get('name')}: {waiting['reason']}{exit_code}: {why}".rstrip(": ")
    terminated = (status.get("state") or {}).get("terminated") or {}
    if terminated.get("reason") == "Error" and status.get("name") == "storage-initializer":
        return f"container storage-initializer failed: {terminated.get('message', '')}".rstrip(": ")
    return None


def pod(doc: dict[str, Any]) -> Pod:
    meta, spec, status = doc.get("metadata") or {}, doc.get("spec") or {}, doc.get("status") or {}
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    problems = [p for p in map(_container_problem, statuses) if p]
    scheduled = _condition(status, "PodScheduled")
    pending = None
    if status.get("phase") == "Pending" and scheduled.get("status") == "False":
        pending = f"{scheduled.get('reason', 'Unschedulable')}: {scheduled.get('message', '')}".rstrip(": ")
    return Pod(
        name=meta.get("name", ""),
        phase=status.get("phase", ""),
        ready=_condition(status, "Ready").get("status") == "True",
        template=template_of(meta, spec),
        restarts=sum(int(s.get("restartCount", 0)) for s in status.get("containerStatuses") or []),
        problem=problems[0] if problems else None,
        pending=pending,
    )


def new_pods_progress(pods: list[Pod], expected: Expected) -> Progress | None:
    """FAILED when a pod of the new spec cannot start; WAIT naming an unscheduled one; else None."""
    new = [p for p in pods if expected.matches(p.template)]
    for p in new:
        if p.problem:
            return failed(f"new pod {p.name}: {p.problem}")
    for p in new:
        if p.pending:
            return wait(f"new pod {p.name} Pending: {p.pending}")
    return None


def route_backends(doc: dict[str, Any] | None) -> dict[str, int]:
    """Backend Service -> weight of an HTTPRoute's last (REST) rule; one unweighted backend is 100."""
    rules = ((doc or {}).get("spec") or {}).get("rules") or []
    refs = rules[-1].get("backendRefs") or [] if rules else []
    if len(refs) == 1 and "weight" not in refs[0]:
        return {refs[0]["name"]: 100}
    return {ref["name"]: int(ref.get("weight", 1)) for ref in refs}
