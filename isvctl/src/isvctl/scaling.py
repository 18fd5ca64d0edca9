"""`make autoscale`: what each autoscaler accepts, the patch, and how to see it took effect.

The refusals mirror KServe's validating webhook (kserve/kserve
pkg/apis/serving/v1beta1/inference_service_validation.go: validateAutoScalingCompExtension and the
validateScaling*CompExtension it picks; component.go: validateReplicas), so the user reads the rule
before anything is sent, plus the cases the webhook lets through but that change nothing.
"""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass
from typing import Any, cast

from . import isvc
from .errors import DeployError
from .isvc import Mode, State
from .observe import Observation
from .patches import Patch
from .progress import Progress, done, wait
from .rollout import Target, rolled_out
from .workload import Expected

DEFAULT_MIN_REPLICAS = 1  # constants.DefaultMinReplicas
DEFAULT_CPU_UTILIZATION = 80  # constants.DefaultCPUUtilization
KNATIVE_HPA_CLASS = "hpa.autoscaling.knative.dev"


class Scaler(enum.Enum):
    KPA = "Knative KPA"
    KNATIVE_HPA = "Knative HPA class"
    HPA = "HPA (autoscalerClass hpa)"
    KEDA = "KEDA (autoscalerClass keda)"
    EXTERNAL = "none of KServe's (autoscalerClass external)"
    NONE = "fixed replicas (autoscalerClass none)"


def scaler_of(state: State) -> Scaler:
    if state.mode is Mode.KNATIVE:
        knative_hpa = state.annotations.get(isvc.KNATIVE_CLASS_ANNOTATION) == KNATIVE_HPA_CLASS
        return Scaler.KNATIVE_HPA if knative_hpa else Scaler.KPA
    if state.mode is None:
        raise DeployError(f"{state.name}: KServe has not reconciled it yet (no status.deploymentMode); try again")
    # autoscaler_reconciler.go getAutoscalerClass: hpa when the annotation is absent.
    cls = state.annotations.get(isvc.AUTOSCALER_CLASS_ANNOTATION, "hpa")
    return {"keda": Scaler.KEDA, "external": Scaler.EXTERNAL, "none": Scaler.NONE}.get(cls, Scaler.HPA)


@dataclass(frozen=True)
class Request:
    min_replicas: int | None = None
    max_replicas: int | None = None
    scale_metric: str | None = None
    scale_target: int | None = None

    @property
    def empty(self) -> bool:
        return self == Request()


def _bounds(state: State, req: Request) -> tuple[int, int]:
    minimum = req.min_replicas if req.min_replicas is not None else state.min_replicas
    maximum = req.max_replicas if req.max_replicas is not None else state.max_replicas
    return (DEFAULT_MIN_REPLICAS if minimum is None else minimum), (maximum or 0)


def check(state: State, req: Request) -> Scaler:
    """Refuse what the webhook refuses, and what it admits but no autoscaler acts on."""
    scaler = scaler_of(state)
    if req.empty:
        raise DeployError("nothing to change: set MIN_REPLICAS, MAX_REPLICAS, SCALE_METRIC or SCALE_TARGET")
    if req.min_replicas is not None and req.min_replicas < 0:
        raise DeployError(f"MIN_REPLICAS must be >= 0, got {req.min_replicas}")
    if req.max_replicas is not None and req.max_replicas < 1:
        raise DeployError(f"MAX_REPLICAS must be >= 1, got {req.max_replicas}")
    minimum, maximum = _bounds(state, req)
    # validateReplicas: min may not exceed max unless max is 0 (unbounded); the other bound is the
    # one already in the spec.
    if maximum and minimum > maximum:
        given = "MIN_REPLICAS" if req.min_replicas is not None else "minReplicas in the spec"
        other = "MAX_REPLICAS" if req.max_replicas is not None else "maxReplicas in the spec"
        raise DeployError(f"{given} ({minimum}) is above {other} ({maximum})")
    if scaler is Scaler.EXTERNAL:
        raise DeployError(
            "autoscalerClass external: KServe creates no autoscaler for this InferenceService, so "
            "these fields would change nothing; change the autoscaler you manage instead"
        )
    if scaler is Scaler.NONE and (req.max_replicas, req.scale_metric, req.scale_target) != (None, None, None):
        raise DeployError("autoscalerClass none: the replica count is MIN_REPLICAS; nothing scales on a metric")
    if scaler in (Scaler.HPA, Scaler.NONE) and req.min_replicas == 0:
        raise DeployError("MIN_REPLICAS=0 (scale to zero) needs Knative mode or the keda autoscaler class")
    if scaler is Scaler.KPA:
        _check_kpa(state, req)
    elif scaler in (Scaler.HPA, Scaler.KNATIVE_HPA):
        _check_hpa(state, req, scaler)
    elif scaler is Scaler.KEDA:
        _check_keda(state, req)
    return scaler


def _check_kpa(state: State, req: Request) -> None:
    # validateScalingKPACompExtension / validateKPAMetrics.
    metric = req.scale_metric or state.scale_metric or "concurrency"
    if metric not in ("concurrency", "rps"):
        raise DeployError(
            f"SCALE_METRIC must be concurrency or rps under Knative's KPA, got {metric} "
            f"(cpu and memory need {isvc.KNATIVE_CLASS_ANNOTATION}: {KNATIVE_HPA_CLASS})"
        )
    if req.scale_target is not None and req.scale_target < 1:
        raise DeployError(f"SCALE_TARGET must be >= 1, got {req.scale_target}")


def _check_hpa(state: State, req: Request, scaler: Scaler) -> None:
    # validateScalingHPACompExtension / validateHPAMetrics.
    metric = req.scale_metric or state.scale_metric or "cpu"
    if metric not in ("cpu", "memory"):
        raise DeployError(f"SCALE_METRIC must be cpu or memory under the {scaler.value}, got {metric}")
    target = req.scale_target if req.scale_target is not None else state.scale_target
    if target is not None:
        # The webhook's test reads `metric == cpu && target < 1 || target > 100`: above 100 is
        # refused for memory too, so the target is a utilisation percentage for both.
        if target > 100 or target < 1:
            raise DeployError(f"SCALE_TARGET is a utilisation percentage for {metric}: 1..100, got {target}")


def _external_metric(state: State) -> dict[str, Any]:
    metrics = (state.auto_scaling or {}).get("metrics") or []
    external = [m for m in metrics if m.get("type") == "External"]
    if len(external) != 1:
        raise DeployError("SCALE_TARGET under KEDA sets the one External metric's threshold; the spec has none")
    return cast(dict[str, Any], external[0])


def _check_keda(state: State, req: Request) -> None:
    if req.scale_metric is not None:
        # validateScalingKedaCompExtension: "ScaleMetric is not supported for KEDA".
        raise DeployError("SCALE_METRIC is not supported with the keda autoscaler class: the query is its metric")
    if req.scale_target is not None:
        if req.scale_target < 1:
            raise DeployError(f"SCALE_TARGET must be >= 1, got {req.scale_target}")
        _external_metric(state)


def patch(state: State, req: Request) -> Patch:
    scaler = check(state, req)
    fields: dict[str, Any] = {}
    if req.min_replicas is not None:
        fields["minReplicas"] = req.min_replicas
    if req.max_replicas is not None:
        fields["maxReplicas"] = req.max_replicas
    if scaler is Scaler.KEDA:
        if req.scale_target is not None:
            # KServe builds the ScaledObject's trigger from autoScaling (keda_reconciler.go
            # getKedaMetrics): the threshold is the External metric's target value. A merge patch
            # replaces the metrics list whole, so it is sent complete.
            auto_scaling = copy.deepcopy(state.auto_scaling or {})
            external = next(m for m in auto_scaling["metrics"] if m.get("type") == "External")
            external["external"]["target"] = {"type": "Value", "value": str(req.scale_target)}
            fields["autoScaling"] = auto_scaling
    else:
        if req.scale_metric is not None:
            fields["scaleMetric"] = req.scale_metric
        if req.scale_target is not None:
            fields["scaleTarget"] = req.scale_target
    return {"spec": {"predictor": fields}}


def took_effect(after: State) -> Target:
    """What actually scales reflects the spec: the autoscaling annotations of the new Knative
    revision (SetAutoScalingAnnotations), KServe's HPA (createHPA), its ScaledObject
    (createKedaScaledObject), or the Deployment's replicas (createRawDefaultDeployment)."""
    scaler = scaler_of(after)
    minimum = DEFAULT_MIN_REPLICAS if after.min_replicas is None else after.min_replicas
    maximum = after.max_replicas or 0
    if scaler in (Scaler.KPA, Scaler.KNATIVE_HPA):
        annotations = {"autoscaling.knative.dev/min-scale": str(minimum)}
        if maximum:
            annotations["autoscaling.knative.dev/max-scale"] = str(maximum)
        if after.scale_target is not None:
            annotations["autoscaling.knative.dev/target"] = str(after.scale_target)
        if after.scale_metric is not None:
            annotations["autoscaling.knative.dev/metric"] = after.scale_metric
        return rolled_out(Expected(annotations=tuple(sorted(annotations.items()))))
    name = after.workload_name
    if scaler is Scaler.HPA:
        hpa_min = max(minimum, DEFAULT_MIN_REPLICAS)
        want = {
            "minReplicas": hpa_min,
            "maxReplicas": max(maximum, hpa_min),
            "metric": after.scale_metric or "cpu",
            "target": after.scale_target if after.scale_target is not None else DEFAULT_CPU_UTILIZATION,
        }
        return _reflects("autoscaling/v2", "HorizontalPodAutoscaler", name, want, _hpa_facts)
    if scaler is Scaler.KEDA:
        threshold = str(_external_metric(after)["external"]["target"].get("value"))
        want = {"minReplicaCount": minimum, "maxReplicaCount": max(maximum, minimum), "threshold": threshold}
        return _reflects("keda.sh/v1alpha1", "ScaledObject", name, want, _scaled_object_facts)
    return _reflects(
        "apps/v1", "Deployment", name, {"replicas": minimum}, lambda d: {"replicas": d["spec"].get("replicas")}
    )


def _hpa_facts(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc.get("spec") or {}
    resource = ((spec.get("metrics") or [{}])[0]).get("resource") or {}
    return {
        "minReplicas": spec.get("minReplicas"),
        "maxReplicas": spec.get("maxReplicas"),
        "metric": resource.get("name"),
        "target": (resource.get("target") or {}).get("averageUtilization"),
    }


def _scaled_object_facts(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc.get("spec") or {}
    triggers = spec.get("triggers") or [{}]
    return {
        "minReplicaCount": spec.get("minReplicaCount"),
        "maxReplicaCount": spec.get("maxReplicaCount"),
        "threshold": (triggers[0].get("metadata") or {}).get("threshold"),
    }


def _reflects(api_version: str, kind: str, name: str, want: dict[str, Any], facts: Any) -> Target:
    def target(obs: Observation) -> Progress:
        doc = obs.get(api_version, kind, name)
        if doc is None:
            return wait(f"KServe has not created {kind} {name} yet")
        got = facts(doc)
        if got != want:
            diff = ", ".join(f"{k} {got.get(k)} (want {v})" for k, v in want.items() if got.get(k) != v)
            return wait(f"{kind} {name}: {diff}")
        return done(f"{kind} {name}: " + ", ".join(f"{k} {v}" for k, v in want.items()))

    return target
