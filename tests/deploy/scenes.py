"""Cluster moments for the deploy tests, produced by the controllers' own logic (kserve_sim.py)
from the rendered overlays, never written by hand.

A story starts from what `make deploy` applies and is moved on by the events of a real cluster:
a patch (the API server bumps metadata.generation), KServe writing the workload (createKnativeService,
createRawDefaultDeployment), Knative or the Deployment controller acting on it, the kubelet
reporting pods. Each `moment()` is the set of objects a GET would return at that point, with the
InferenceService status recomputed by KServe's propagation functions.
"""

from __future__ import annotations

import copy
import json
import zlib
from typing import Any

from isvctl import manifests

from . import kserve_sim
from .conftest import render

NS = "ml-serving"


def merge(target: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386), as the API server applies it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def _pod(name: str, template: dict[str, Any], *, ready: bool = True, waiting: dict | None = None, phase="Running"):
    """A pod as the kubelet reports it."""
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [
            {"name": "kserve-container", "ready": ready, "restartCount": 0, "state": {"running": {}}}
        ],
    }
    if waiting:
        status["containerStatuses"][0].update(waiting)
    if phase == "Pending":
        status = {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
                }
            ],
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, **copy.deepcopy(template["metadata"])},
        "spec": copy.deepcopy(template["spec"]),
        "status": status,
    }


CRASH_LOOP = {
    "restartCount": 3,
    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
    "lastState": {
        "terminated": {
            "exitCode": 1,
            "reason": "Error",
            "message": "RuntimeError: model.json in /mnt/models declares 1000 classes but the weights have 10.",
        }
    },
}


class Story:
    def __init__(self, overlay: str):
        objects = render(overlay)
        self.isvc = copy.deepcopy(manifests.one_of(objects, "InferenceService"))
        self.runtime = manifests.one_of(objects, "ServingRuntime")
        self.isvc["metadata"].update({"generation": 1, "namespace": NS})
        self.isvc = kserve_sim.defaulted(self.isvc)
        self.status: dict[str, Any] = {}
        self.events: list[str] = []

    @property
    def name(self) -> str:
        return self.isvc["metadata"]["name"]

    def patch(self, patch: dict[str, Any]) -> None:
        """The API server: a merge patch, and a new generation when the spec changes."""
        before = copy.deepcopy(self.isvc["spec"])
        self.isvc = merge(self.isvc, patch)
        if self.isvc["spec"] != before:
            self.isvc["metadata"]["generation"] += 1

    def isvc_doc(self) -> dict[str, Any]:
        return {**copy.deepcopy(self.isvc), "status": copy.deepcopy(self.status)}


class KnativeStory(Story):
    """Knative mode: KServe writes a Knative Service; Knative turns each new template into a
    revision (<ksvc>-00001, -00002, ...) and routes by the traffic block."""

    def __init__(self, overlay: str = "serverless"):
        super().__init__(overlay)
        self.ksvc = kserve_sim.knative_service(self.isvc, self.runtime)
        self.revisions: dict[str, dict[str, Any]] = {}  # revision -> its template
        self.ksvc_status: dict[str, Any] = {"observedGeneration": 0}
        self.pods: list[dict[str, Any]] = []
        self.url = f"http://{self.name}.{NS}.example.com"
        # Deployed and rolled out: revision 00001 serves everything.
        self.knative_creates_revision()
        self.revision_ready()
        self.moment()

    @property
    def rolled_out(self) -> str:
        return (self.status.get("components") or {}).get("predictor", {}).get("latestRolledoutRevision", "")

    def kserve_reconciles(self) -> None:
        """createKnativeService from the current spec; Knative bumps the Knative Service's
        generation only when KServe's update changes it (reconcileKsvc, semanticEquals)."""
        desired = kserve_sim.knative_service(self.isvc, self.runtime, self.rolled_out)
        if desired["spec"] != self.ksvc["spec"]:
            generation = self.ksvc["metadata"]["generation"] + 1
            self.ksvc = desired
            self.ksvc["metadata"]["generation"] = generation

    def knative_creates_revision(self) -> str:
        """Knative's Configuration reconciler: a new template becomes the next revision."""
        self.kserve_reconciles()
        name = f"{self.ksvc['metadata']['name']}-{len(self.revisions) + 1:05d}"
        self.revisions[name] = copy.deepcopy(self.ksvc["spec"]["template"])
        self.ksvc_status.update(latestCreatedRevisionName=name, observedGeneration=self.ksvc["metadata"]["generation"])
        self._knative_conditions(
            "Unknown", "RevisionMissing", f"Configuration is waiting for a Revision {name} to be ready."
        )
        self.pods = [_pod(f"{name}-deployment-7d9f-x2k", self.revisions[name], ready=False)]
        return name

    def revision_ready(self) -> None:
        name = self.ksvc_status["latestCreatedRevisionName"]
        self.ksvc_status["latestReadyRevisionName"] = name
        self.pods = [_pod(f"{name}-deployment-7d9f-x2k", self.revisions[name])]
        self.knative_routes()

    def revision_fails(self) -> None:
        name = self.ksvc_status["latestCreatedRevisionName"]
        self.pods = [_pod(f"{name}-deployment-7d9f-x2k", self.revisions[name], ready=False, waiting=CRASH_LOOP)]
        message = (
            f'Revision "{name}" failed with message: Container failed with: RuntimeError: model.json in '
            "/mnt/models declares 1000 classes but the weights have 10.."
        )
        self._knative_conditions("False", "RevisionFailed", message)

    def knative_routes(self) -> None:
        """Knative's Route: the traffic block with latestRevision resolved to the latest ready one."""
        self.kserve_reconciles()
        self.ksvc_status["observedGeneration"] = self.ksvc["metadata"]["generation"]
        ready = self.ksvc_status.get("latestReadyRevisionName")
        traffic = []
        for t in self.ksvc["spec"]["traffic"]:
            resolved = {"revisionName": ready if t.get("latestRevision") else t["revisionName"], **t}
            resolved["revisionName"] = ready if t.get("latestRevision") else t["revisionName"]
            if t.get("tag"):
                resolved["url"] = f"http://{t['tag']}-{self.ksvc['metadata']['name']}.{NS}.example.com"
            traffic.append(resolved)
        self.ksvc_status["traffic"] = traffic
        if self.ksvc_status.get("latestCreatedRevisionName") == ready:
            self._knative_conditions("True")

    def _knative_conditions(self, status: str, reason: str = "", message: str = "") -> None:
        conditions = [kserve_sim._condition(t, status, reason, message) for t in ("ConfigurationsReady", "Ready")]
        conditions.append(kserve_sim._condition("RoutesReady", "True"))
        self.ksvc_status["conditions"] = conditions
        self.ksvc_status["url"] = f"http://{self.ksvc['metadata']['name']}.{NS}.example.com"

    def moment(self) -> list[dict[str, Any]]:
        """KServe's Predictor.Reconcile over what Knative reports now."""
        self.status = kserve_sim.knative_isvc_status(self.status, self.ksvc_status, self.pods, isvc_url=self.url)
        ksvc = {**copy.deepcopy(self.ksvc), "status": copy.deepcopy(self.ksvc_status)}
        return [self.isvc_doc(), ksvc, *copy.deepcopy(self.pods)]

    def kserve_rejected(self, message: str) -> list[dict[str, Any]]:
        """The Knative webhook refused KServe's update: PropagateRawStatusWithMessages(ReconcileFailed)
        and the Knative Service stays as it was (predictor.go Reconcile)."""
        failure = kserve_sim._condition("PredictorReady", "False", "ReconcileFailed", message)
        conditions = {c["type"]: c for c in self.status.get("conditions") or []}
        conditions["PredictorReady"] = failure
        conditions["Ready"] = kserve_sim._ready(conditions)
        self.status = {**self.status, "conditions": [conditions[k] for k in sorted(conditions)]}
        ksvc = {**copy.deepcopy(self.ksvc), "status": copy.deepcopy(self.ksvc_status)}
        return [self.isvc_doc(), ksvc, *copy.deepcopy(self.pods)]


class StandardStory(Story):
    """Standard mode: KServe writes a Deployment (and, with the Gateway API, an HTTPRoute); the
    Deployment controller rolls pods one surge at a time; KServe copies its conditions."""

    def __init__(self, overlay: str = "raw", *, gateway: bool = False):
        super().__init__(overlay)
        self.gateway = gateway
        self.url = f"http://{self.name}-{NS}.example.com"
        self.replicas = self.isvc["spec"]["predictor"].get("minReplicas", 1)
        self.deployments: dict[str, dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.kserve_reconciles()
        self.rolled_out()
        self.moment()

    def _write(self, name: str, isvc: dict[str, Any], replicas: int) -> None:
        desired = kserve_sim.deployment(isvc, self.runtime, name=name)
        current = self.deployments.get(name)
        if current is None:
            desired["spec"]["replicas"] = replicas
            desired["status"] = {"observedGeneration": 0}
            self.deployments[name] = desired
        elif desired["spec"]["template"] != current["spec"]["template"]:
            current["spec"]["template"] = desired["spec"]["template"]
            current["metadata"]["generation"] += 1

    def kserve_reconciles(self) -> None:
        """createRawDefaultDeployment for the stable predictor and each canary
        (reconcileCanaryDeployments), deleting the orphans."""
        wanted = {kserve_sim.predictor_name(self.isvc): (self.isvc, self.replicas)}
        for canary in self.isvc["spec"].get("canary") or []:
            canary_isvc = kserve_sim.canary_isvc(self.isvc, canary)
            wanted[kserve_sim.predictor_name(canary_isvc)] = (
                canary_isvc,
                kserve_sim.canary_replicas(self.isvc, canary),
            )
        for name in list(self.deployments):
            if name not in wanted:
                del self.deployments[name]
                self.pods = [p for p in self.pods if not p["metadata"]["name"].startswith(name + "-")]
        for name, (isvc, replicas) in wanted.items():
            self._write(name, isvc, replicas)

    def hpa_scales(self, replicas: int) -> None:
        """The HPA changes spec.replicas: a new Deployment generation, no template change."""
        dep = self.deployments[kserve_sim.predictor_name(self.isvc)]
        dep["spec"]["replicas"] = replicas
        dep["metadata"]["generation"] += 1
        dep["status"]["observedGeneration"] = dep["metadata"]["generation"]

    def _set_status(self, name: str, *, updated: int, available: int, total: int, reason: str, message: str = ""):
        dep = self.deployments[name]
        progressing_status = "False" if reason == "ProgressDeadlineExceeded" else "True"
        dep["status"] = {
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": [
                kserve_sim._condition(
                    "Available",
                    "True" if available else "False",
                    "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                ),
                kserve_sim._condition("Progressing", progressing_status, reason, message),
            ],
        }

    def _pods_of(self, name: str, count: int, **kwargs: Any) -> list[dict[str, Any]]:
        template = self.deployments[name]["spec"]["template"]
        digest = zlib.crc32(json.dumps(template, sort_keys=True).encode()) % 10**5
        return [_pod(f"{name}-{digest:05d}-p{i}", template, **kwargs) for i in range(count)]

    def rolled_out(self, name: str | None = None) -> None:
        """The Deployment controller finished: every replica runs the current template."""
        name = name or kserve_sim.predictor_name(self.isvc)
        replicas = self.deployments[name]["spec"]["replicas"]
        self._set_status(name, updated=replicas, available=replicas, total=replicas, reason="NewReplicaSetAvailable")
        self.pods = [p for p in self.pods if not p["metadata"]["name"].startswith(name + "-")]
        self.pods += self._pods_of(name, replicas)

    def rolling(self, *, new_pod: dict | None = None, pending: bool = False) -> None:
        """maxSurge 1, maxUnavailable 0: one new pod beside all the old ones."""
        name = kserve_sim.predictor_name(self.isvc)
        replicas = self.deployments[name]["spec"]["replicas"]
        self._set_status(name, updated=1, available=replicas, total=replicas + 1, reason="ReplicaSetUpdated")
        if pending:
            self.pods += self._pods_of(name, 1, phase="Pending", ready=False)
        else:
            self.pods += self._pods_of(name, 1, ready=False, waiting=new_pod)

    def deadline_exceeded(self) -> None:
        name = kserve_sim.predictor_name(self.isvc)
        replicas = self.deployments[name]["spec"]["replicas"]
        self._set_status(
            name,
            updated=1,
            available=replicas,
            total=replicas + 1,
            reason="ProgressDeadlineExceeded",
            message=f'ReplicaSet "{name}-5c9" has timed out progressing.',
        )

    def moment(self) -> list[dict[str, Any]]:
        """Predictor.Reconcile in Standard mode: PropagateRawStatus from the stable Deployment as it
        was before this reconcile's update, canary statuses, the HTTPRoute."""
        stable = self.deployments[kserve_sim.predictor_name(self.isvc)]
        stable_pods = [p for p in self.pods if p["metadata"]["name"].startswith(stable["metadata"]["name"] + "-")]
        status = kserve_sim.standard_isvc_status(self.status, stable, stable_pods, url=self.url)
        canary_deps = {
            c["predictor"]["name"]: self.deployments.get(f"{self.name}-{c['predictor']['name']}-predictor") or {}
            for c in self.isvc["spec"].get("canary") or []
        }
        self.status = kserve_sim.canary_statuses(status, self.isvc, canary_deps)
        docs = [self.isvc_doc(), *copy.deepcopy(list(self.deployments.values())), *copy.deepcopy(self.pods)]
        if self.gateway:
            docs.append(kserve_sim.httproute(self.isvc, self.status))
        return docs
