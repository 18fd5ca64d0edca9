"""What KServe's controller writes, rebuilt from its code (kserve/kserve at the commit in
tests/deploy/crds/README.md). Each function names the Go function it follows; the tests use them to
derive the objects and statuses a cluster would show, instead of guessing them.

Only what this project's manifests exercise is modelled: one predictor, a ServingRuntime named by
the InferenceService, a custom transformer (in its own pods or collocated), no explainer, worker
spec or multiple storage URIs.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

TIME = "2026-11-20T10:00:00Z"
STORAGE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
# constants.ServiceAnnotationDisallowedList: never copied from the InferenceService to its pods.
DISALLOWED_ANNOTATIONS = {
    "autoscaling.knative.dev/min-scale",
    "autoscaling.knative.dev/max-scale",
    STORAGE_URI_ANNOTATION,
    "kubectl.kubernetes.io/last-applied-configuration",
    "modelFormat",
}


# -- webhook defaulting ---------------------------------------------------------------------------


def defaulted(isvc: dict[str, Any]) -> dict[str, Any]:
    """InferenceServiceDefaulter (inference_service_defaults.go DefaultInferenceService): the legacy
    mode names rewritten, the modelFormat annotation added."""
    out = copy.deepcopy(isvc)
    annotations = out["metadata"].setdefault("annotations", {})
    mode = annotations.get("serving.kserve.io/deploymentMode")
    annotations["serving.kserve.io/deploymentMode"] = {"RawDeployment": "Standard", "Serverless": "Knative"}.get(
        mode, mode
    )
    if mode is None:
        del annotations["serving.kserve.io/deploymentMode"]
    model = out["spec"]["predictor"].get("model") or {}
    if model.get("modelFormat", {}).get("name"):
        annotations.setdefault("modelFormat", model["modelFormat"]["name"])
    return out


# -- pod spec ---------------------------------------------------------------------------------------


def _strategic_merge(base: Any, patch: Any, key: str = "") -> Any:
    """Enough of Kubernetes' strategic merge for containers and pod specs: maps merge, lists of
    named items merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _strategic_merge(base.get(k), v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in ("env", "volumes", "volumeMounts", "ports"):
        merge_key = {"ports": "containerPort", "volumeMounts": "mountPath"}.get(key, "name")
        out = [copy.deepcopy(b) for b in base]
        for item in patch:
            match = next((i for i, b in enumerate(out) if b.get(merge_key) == item.get(merge_key)), None)
            if match is None:
                out.append(copy.deepcopy(item))
            else:
                out[match] = _strategic_merge(out[match], item)
        return out
    return copy.deepcopy(patch)


_POD_FIELDS_OF_RUNTIME = ("nodeSelector", "affinity", "tolerations", "volumes", "imagePullSecrets", "schedulerName")
_COMPONENT_EXTENSION_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "scaleMetricType",
    "autoScaling",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
    "model",
    "name",
    "storageUris",
    "workerSpec",
}


def pod_spec(isvc: dict[str, Any], runtime: dict[str, Any]) -> dict[str, Any]:
    """Predictor.buildPodSpec (components/predictor.go): MergeRuntimeContainers (the runtime's
    kserve-container patched by the InferenceService's model container, args concatenated),
    ReplacePlaceholders ({{.Name}}), MergePodSpec (the runtime's pod-level fields patched by the
    predictor's)."""
    predictor = isvc["spec"]["predictor"]
    model = {k: v for k, v in (predictor.get("model") or {}).items() if k in _CONTAINER_FIELDS}
    (rt_container,) = [c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container"]
    container = _strategic_merge(rt_container, {k: v for k, v in model.items() if k != "args"})
    container["args"] = list(rt_container.get("args") or []) + list(model.get("args") or [])
    container["name"] = "kserve-container"
    container = json.loads(json.dumps(container).replace("{{.Name}}", isvc["metadata"]["name"]))
    runtime_pod = {k: runtime["spec"][k] for k in _POD_FIELDS_OF_RUNTIME if k in runtime["spec"]}
    predictor_pod = {k: v for k, v in predictor.items() if k not in _COMPONENT_EXTENSION_FIELDS}
    spec = _strategic_merge(runtime_pod, predictor_pod)
    # A transformer-container among the predictor's containers joins the pod, placeholders filled.
    collocated = [c for c in predictor.get("containers") or [] if c["name"] == TRANSFORMER_CONTAINER]
    spec["containers"] = [container] + [
        json.loads(json.dumps(c).replace("{{.Name}}", isvc["metadata"]["name"])) for c in collocated
    ]
    return spec


TRANSFORMER_CONTAINER = "transformer-container"  # constants.TransformerContainerName


def transformer_container(isvc: dict[str, Any]) -> dict[str, Any]:
    """CustomTransformer.GetContainer (pkg/apis/serving/v1beta1/transformer_custom.go): the first
    container of spec.transformer, with --model_name, --predictor_host <predictor>.<namespace>,
    --http_port 8080 and --workers <containerConcurrency> appended where no argument starts with
    those flags (utils.IncludesArg matches prefixes)."""
    transformer = isvc["spec"]["transformer"]
    container = copy.deepcopy(transformer["containers"][0])
    args = container.setdefault("args", [])

    def missing(flag: str) -> bool:
        return not any(a == flag or a.startswith(flag) for a in args)

    if missing("--model_name"):
        args += ["--model_name", isvc["metadata"]["name"]]
    if missing("--predictor_host"):
        args += ["--predictor_host", f"{predictor_name(isvc)}.{isvc['metadata']['namespace']}"]
    if missing("--http_port"):
        args += ["--http_port", "8080"]
    if missing("--workers") and transformer.get("containerConcurrency") is not None:
        args += ["--workers", str(transformer["containerConcurrency"])]
    return container


_CONTAINER_FIELDS = {
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "ports",
    "envFrom",
    "env",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "volumeMounts",
    "volumeDevices",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
}


def _pod_annotations(isvc: dict[str, Any], runtime: dict[str, Any]) -> dict[str, str]:
    """buildPredictorResources + buildObjectMeta: runtime annotations < filtered InferenceService
    annotations (+ the storage URI, addStorageInitializerAnnotations) < predictor annotations."""
    predictor = isvc["spec"]["predictor"]
    filtered = {k: v for k, v in (isvc["metadata"].get("annotations") or {}).items() if k not in DISALLOWED_ANNOTATIONS}
    storage_uri = (predictor.get("model") or {}).get("storageUri")
    if storage_uri:
        filtered[STORAGE_URI_ANNOTATION] = storage_uri
    return {**(runtime["spec"].get("annotations") or {}), **filtered, **(predictor.get("annotations") or {})}


def _pod_labels(isvc: dict[str, Any], runtime: dict[str, Any]) -> dict[str, str]:
    return {
        **(runtime["spec"].get("labels") or {}),
        **(isvc["metadata"].get("labels") or {}),
        **(isvc["spec"]["predictor"].get("labels") or {}),
        ISVC_LABEL: isvc["metadata"]["name"],
        "component": "predictor",
    }


def predictor_name(isvc: dict[str, Any]) -> str:
    """constants.PredictorServiceName."""
    name = isvc["spec"]["predictor"].get("name")
    return f"{isvc['metadata']['name']}-{name}-predictor" if name else f"{isvc['metadata']['name']}-predictor"


# -- Knative mode -----------------------------------------------------------------------------------


def knative_service(isvc: dict[str, Any], runtime: dict[str, Any], rolled_out: str = "") -> dict[str, Any]:
    """createKnativeService (reconcilers/knative/ksvc_reconciler.go) with SetAutoScalingAnnotations
    (controller/v1alpha1/utils/utils.go): the Knative Service KServe asks Knative to admit."""
    predictor = isvc["spec"]["predictor"]
    annotations = _pod_annotations(isvc, runtime)
    annotations.setdefault("autoscaling.knative.dev/class", "kpa.autoscaling.knative.dev")
    if predictor.get("scaleTarget") is not None:
        annotations["autoscaling.knative.dev/target"] = str(predictor["scaleTarget"])
    if predictor.get("scaleMetric") is not None:
        annotations["autoscaling.knative.dev/metric"] = predictor["scaleMetric"]
    annotations["autoscaling.knative.dev/min-scale"] = str(predictor.get("minReplicas", 1))
    if predictor.get("maxReplicas"):
        annotations["autoscaling.knative.dev/max-scale"] = str(predictor["maxReplicas"])
    canary = predictor.get("canaryTrafficPercent")
    if canary is not None and rolled_out:
        traffic = [{"latestRevision": True, "percent": canary}]
        if canary < 100:
            traffic.append(
                {"revisionName": rolled_out, "latestRevision": False, "percent": 100 - canary, "tag": "prev"}
            )
    else:
        traffic = [{"latestRevision": True, "percent": 100}]
    template_spec: dict[str, Any] = {"containers": [], **pod_spec(isvc, runtime)}
    for key, field in (("timeoutSeconds", "timeout"), ("responseStartTimeoutSeconds", "timeout")):
        if predictor.get(field) is not None:
            template_spec[key] = predictor[field]
    if predictor.get("containerConcurrency") is not None:
        template_spec["containerConcurrency"] = predictor["containerConcurrency"]
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": predictor_name(isvc),
            "namespace": isvc["metadata"]["namespace"],
            "labels": _pod_labels(isvc, runtime),
            "generation": 1,
        },
        "spec": {
            "template": {
                "metadata": {"labels": _pod_labels(isvc, runtime), "annotations": annotations},
                "spec": template_spec,
            },
            "traffic": traffic,
        },
    }


def _condition(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    cond = {"type": kind, "status": status, "lastTransitionTime": TIME}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _ready(conditions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """conditionSet (inference_service_status.go): Ready depends on PredictorReady and IngressReady,
    knative.dev/pkg's living condition set semantics."""
    deps = [conditions[t] for t in ("PredictorReady", "IngressReady") if t in conditions]
    bad = next((c for c in deps if c["status"] == "False"), None)
    if bad:
        return _condition("Ready", "False", bad.get("reason", ""), bad.get("message", ""))
    if len(deps) < 2 or any(c["status"] != "True" for c in deps):
        unknown = next((c for c in deps if c["status"] != "True"), {})
        return _condition("Ready", "Unknown", unknown.get("reason", ""), unknown.get("message", ""))
    return _condition("Ready", "True")


def knative_isvc_status(
    previous: dict[str, Any], ksvc_status: dict[str, Any], pods: list[dict[str, Any]], *, isvc_url: str
) -> dict[str, Any]:
    """Predictor.Reconcile in Knative mode: PropagateStatus (traffic, revisions, the rolled-out
    bookkeeping, observedGeneration := the Knative Service's), PropagateModelStatus on the latest
    created revision's pods, then the controller's PropagateCrossComponentStatus and IngressReady."""
    component = copy.deepcopy((previous.get("components") or {}).get("predictor") or {})
    latest_ready = ksvc_status.get("latestReadyRevisionName", "")
    latest_created = ksvc_status.get("latestCreatedRevisionName", "")
    component["latestCreatedRevision"] = latest_created
    per_revision: dict[str, int] = {}
    for t in ksvc_status.get("traffic") or []:
        per_revision[t["revisionName"]] = per_revision.get(t["revisionName"], 0) + t["percent"]
    for t in ksvc_status.get("traffic") or []:
        if t["revisionName"] == latest_ready and t.get("latestRevision"):
            if component.get("latestRolledoutRevision") != latest_ready:
                if t["percent"] == 100:
                    if component.get("latestRolledoutRevision"):
                        component["previousRolledoutRevision"] = component["latestRolledoutRevision"]
                    component["latestRolledoutRevision"] = latest_ready
            elif latest_ready == latest_created and t["percent"] < 100:
                if per_revision.get(t["revisionName"]) == 100 and component.get("previousRolledoutRevision"):
                    component["latestRolledoutRevision"] = component["previousRolledoutRevision"]
    component["latestReadyRevision"] = latest_ready
    component["traffic"] = ksvc_status.get("traffic") or []
    ksvc_conditions = {c["type"]: c for c in ksvc_status.get("conditions") or []}
    ready = ksvc_conditions.get("Ready", _condition("Ready", "Unknown"))
    if ready["status"] == "True":
        component["url"] = ksvc_status["url"]
    conditions = {
        "PredictorReady": {**ready, "type": "PredictorReady"},
        "PredictorRouteReady": {**ksvc_conditions.get("RoutesReady", ready), "type": "PredictorRouteReady"},
        "PredictorConfigurationReady": {
            **ksvc_conditions.get("ConfigurationsReady", ready),
            "type": "PredictorConfigurationReady",
        },
        "Stopped": _condition("Stopped", "False"),
    }
    conditions["RoutesReady"] = {**conditions["PredictorRouteReady"], "type": "RoutesReady"}
    conditions["LatestDeploymentReady"] = {**conditions["PredictorConfigurationReady"], "type": "LatestDeploymentReady"}
    # The ingress reconciler marks IngressReady once the predictor is ready (ingress_reconciler.go).
    ingress = previous_condition(previous, "IngressReady") or _condition("IngressReady", "Unknown")
    if ready["status"] == "True":
        ingress = _condition("IngressReady", "True")
    conditions["IngressReady"] = ingress
    conditions["Ready"] = _ready(conditions)
    status: dict[str, Any] = {
        "components": {"predictor": component},
        "conditions": [conditions[k] for k in sorted(conditions)],
        "deploymentMode": "Knative",
        "observedGeneration": ksvc_status.get("observedGeneration", 0),
        "url": isvc_url if conditions["Ready"]["status"] == "True" or previous.get("url") else None,
    }
    status["modelStatus"] = model_status(status, pods, raw=False, ksvc_conditions=list(ksvc_conditions.values()))
    return {k: v for k, v in status.items() if v is not None}


def previous_condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)


def model_status(
    status: dict[str, Any], pods: list[dict[str, Any]], *, raw: bool, ksvc_conditions: list[dict[str, Any]] = ()
) -> dict[str, Any]:
    """PropagateModelStatus: judged from the readiness of the whole service and the FIRST pod only."""
    ready_copies = sum(
        1
        for p in pods
        if p["status"].get("phase") == "Running"
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
    )
    out: dict[str, Any] = {"copies": {"failedCopies": 0, "totalCopies": ready_copies}}

    def state(target: str, transition: str, failure: dict[str, Any] | None = None) -> dict[str, Any]:
        active = "Loaded" if target == "Loaded" else "Pending"
        result = {**out, "states": {"activeModelState": active, "targetModelState": target}}
        result["transitionStatus"] = transition
        if failure:
            result["lastFailureInfo"] = failure
        return result

    if not pods:
        if not raw and any(c["status"] == "False" for c in ksvc_conditions):
            return state("FailedToLoad", "BlockedByFailedLoad")
        return state("Pending", "InProgress")
    component = status["components"]["predictor"]
    ready = (previous_condition(status, "Ready") or {}).get("status") == "True"
    if ready and (raw or component.get("latestCreatedRevision") == component.get("latestReadyRevision")):
        return state("Loaded", "UpToDate")
    for cs in pods[0]["status"].get("containerStatuses") or []:
        if cs["name"] == "kserve-container":
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") == "CrashLoopBackOff":
                last = cs["lastState"]["terminated"]
                failure = {"reason": "ModelLoadFailed", "message": last["message"], "exitCode": last["exitCode"]}
                return state("FailedToLoad", "BlockedByFailedLoad", failure)
    return state("Pending", "InProgress")


# -- Standard mode ----------------------------------------------------------------------------------


def deployment(isvc: dict[str, Any], runtime: dict[str, Any], *, name: str | None = None) -> dict[str, Any]:
    """createRawDefaultDeployment (reconcilers/deployment/deployment_reconciler.go): selector
    app=isvc.<name>, the predictor's deploymentStrategy, setDefaultPodSpec."""
    predictor = isvc["spec"]["predictor"]
    name = name or predictor_name(isvc)
    labels = {**_pod_labels(isvc, runtime), "app": f"isvc.{name}"}
    spec = pod_spec(isvc, runtime)
    spec.setdefault("terminationGracePeriodSeconds", 30)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": isvc["metadata"]["namespace"], "generation": 1, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app": f"isvc.{name}"}},
            "strategy": predictor.get("deploymentStrategy")
            or {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": labels, "annotations": _pod_annotations(isvc, runtime)}, "spec": spec},
        },
    }


def standard_isvc_status(
    previous: dict[str, Any], deployment_doc: dict[str, Any], pods: list[dict[str, Any]], *, url: str
) -> dict[str, Any]:
    """PropagateRawStatus (Available, then Progressing, then ReplicaFailure decide PredictorReady;
    observedGeneration := the Deployment's) and PropagateModelStatus on the pods labelled
    app=isvc.<name>, first pod only."""
    dep_status = deployment_doc.get("status") or {}
    dep_conditions = {c["type"]: c for c in dep_status.get("conditions") or []}
    available = dep_conditions.get("Available")
    progressing = dep_conditions.get("Progressing")
    ready = _condition("PredictorReady", "False")
    if available and available["status"] == "True":
        ready = _condition("PredictorReady", "True", available.get("reason", ""), available.get("message", ""))
    if progressing:
        if progressing["status"] == "False" and progressing.get("message"):
            ready = _condition("PredictorReady", "False", progressing.get("reason", ""), progressing["message"])
        elif progressing["status"] == "True":
            if progressing.get("reason") == "NewReplicaSetAvailable":
                ready = _condition("PredictorReady", "True", progressing["reason"], progressing.get("message", ""))
            elif not available or available["status"] != "True":
                ready = _condition(
                    "PredictorReady", "Unknown", progressing.get("reason", ""), progressing.get("message", "")
                )
    if available and available["status"] == "False":
        ready = _condition("PredictorReady", "False", available.get("reason", ""), available.get("message", ""))
    component = copy.deepcopy((previous.get("components") or {}).get("predictor") or {})
    if ready["status"] == "True":
        component["url"] = url
    conditions = {"PredictorReady": ready, "Stopped": _condition("Stopped", "False")}
    conditions["IngressReady"] = (
        _condition("IngressReady", "True")
        if ready["status"] == "True" or previous_condition(previous, "IngressReady")
        else _condition("IngressReady", "False", "Predictor ingress not created")
    )
    conditions["Ready"] = _ready(conditions)
    status: dict[str, Any] = {
        "components": {"predictor": component},
        "conditions": [conditions[k] for k in sorted(conditions)],
        "deploymentMode": "Standard",
        "observedGeneration": dep_status.get("observedGeneration", 0),
        "url": url,
    }
    status["modelStatus"] = model_status(status, pods, raw=True)
    return status


def canary_statuses(status: dict[str, Any], isvc: dict[str, Any], canary_deployments: dict[str, dict]) -> dict:
    """reconcileCanaryDeployments: ready when the canary's Deployment has an available replica;
    CanaryPredictorReady over all of them (cleared when there is no canary)."""
    out = copy.deepcopy(status)
    canaries = isvc["spec"].get("canary") or []
    conditions = [c for c in out.get("conditions") or [] if c["type"] != "CanaryPredictorReady"]
    out.pop("canaryStatuses", None)
    if canaries:
        statuses = []
        for c in canaries:
            dep = canary_deployments.get(c["predictor"]["name"]) or {}
            statuses.append(
                {
                    "name": c["predictor"]["name"],
                    "ready": int((dep.get("status") or {}).get("availableReplicas", 0)) > 0,
                    "trafficPercent": c["trafficPercent"],
                }
            )
        out["canaryStatuses"] = statuses
        all_ready = all(s["ready"] for s in statuses)
        conditions.append(
            _condition(
                "CanaryPredictorReady",
                "True" if all_ready else "False",
                "AllCanariesReady" if all_ready else "CanariesNotReady",
            )
        )
    out["conditions"] = sorted(conditions, key=lambda c: c["type"])
    return out


def canary_replicas(isvc: dict[str, Any], canary: dict[str, Any]) -> int:
    """canaryReplicaCount."""
    if canary["predictor"].get("minReplicas") is not None:
        return canary["predictor"]["minReplicas"]
    stable = isvc["spec"]["predictor"].get("minReplicas", 1)
    return int(math.ceil(stable * canary["trafficPercent"] / 100))


def canary_isvc(isvc: dict[str, Any], canary: dict[str, Any]) -> dict[str, Any]:
    """buildCanaryPredictor: the stable predictor with the canary's fields merged over it."""
    out = copy.deepcopy(isvc)
    predictor = _strategic_merge(out["spec"]["predictor"], canary["predictor"])
    out["spec"]["predictor"] = predictor
    return out


def httproute(isvc: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """createRawPredictorHTTPRoute with applyCanaryWeights (ingress/httproute_reconciler.go): named
    after the stable predictor, weights only for canaries KServe reports ready."""
    name = isvc["metadata"]["name"]
    stable = predictor_name(isvc)
    ref = {"group": "", "kind": "Service", "name": stable, "namespace": isvc["metadata"]["namespace"], "port": 80}
    refs = [ref]
    ready = {s["name"]: s for s in status.get("canaryStatuses") or [] if s["ready"]}
    if isvc["spec"].get("canary"):
        canary_total = sum(c["trafficPercent"] for c in isvc["spec"]["canary"] if c["predictor"]["name"] in ready)
        refs = [{**ref, "weight": 100 - canary_total}]
        for c in isvc["spec"]["canary"]:
            if c["predictor"]["name"] in ready:
                canary_name = f"{name}-{c['predictor']['name']}-predictor"
                refs.append({**ref, "name": canary_name, "weight": c["trafficPercent"]})
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": f"{name}-predictor", "namespace": isvc["metadata"]["namespace"]},
        "spec": {"rules": [{"backendRefs": refs}]},
    }


# -- autoscalers --------------------------------------------------------------------------------------


def scaled_object(isvc: dict[str, Any]) -> dict[str, Any]:
    """createKedaScaledObject and getKedaMetrics (reconcilers/keda/keda_reconciler.go)."""
    predictor = isvc["spec"]["predictor"]
    minimum = predictor.get("minReplicas", 1)
    maximum = max(predictor.get("maxReplicas", 0), minimum)
    triggers = []
    for metric in (predictor.get("autoScaling") or {}).get("metrics") or []:
        if metric["type"] == "External":
            ext = metric["external"]
            meta = {
                "serverAddress": ext["metric"].get("serverAddress", ""),
                "query": ext["metric"].get("query", ""),
                "threshold": str(ext["target"].get("value", "0")),
            }
            if ext["metric"].get("backend") == "prometheus" and ext["metric"].get("namespace"):
                meta["namespace"] = ext["metric"]["namespace"]
            triggers.append({"type": ext["metric"]["backend"], "metadata": meta})
    obj: dict[str, Any] = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": predictor_name(isvc), "namespace": isvc["metadata"]["namespace"]},
        "spec": {
            "scaleTargetRef": {"name": predictor_name(isvc)},
            "triggers": triggers,
            "minReplicaCount": minimum,
            "maxReplicaCount": maximum,
        },
    }
    behavior = (predictor.get("autoScaling") or {}).get("behavior") or {}
    windows = {
        k: {"stabilizationWindowSeconds": v["stabilizationWindowSeconds"]}
        for k, v in behavior.items()
        if "stabilizationWindowSeconds" in v
    }
    if windows:
        obj["spec"]["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": windows}}
    return obj


def hpa(isvc: dict[str, Any]) -> dict[str, Any]:
    """createHPA and getHPAMetrics (reconcilers/hpa/hpa_reconciler.go), for scaleMetric/scaleTarget."""
    predictor = isvc["spec"]["predictor"]
    minimum = max(predictor.get("minReplicas", 1), 1)
    metric = predictor.get("scaleMetric", "cpu")
    target = predictor.get("scaleTarget", 80 if metric == "cpu" else None)
    metrics = []
    if target is not None:
        metrics = [
            {
                "type": "Resource",
                "resource": {"name": metric, "target": {"type": "Utilization", "averageUtilization": target}},
            }
        ]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": predictor_name(isvc), "namespace": isvc["metadata"]["namespace"]},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": predictor_name(isvc)},
            "minReplicas": minimum,
            "maxReplicas": max(predictor.get("maxReplicas", 0), minimum),
            "metrics": metrics,
        },
    }


# -- InferenceGraph -----------------------------------------------------------------------------------

INFERENCE_GRAPH_LABEL = "serving.kserve.io/inferencegraph"  # constants.InferenceGraphLabel


def graph_router_deployment(
    graph: dict[str, Any], service_urls: dict[str, str], *, generation: int = 1
) -> dict[str, Any]:
    """The router's Deployment in Standard mode, rolled out: InferenceGraphReconciler.Reconcile
    resolves each serviceName into serviceUrl (GetPredictorEndpoint), then createInferenceGraphPodSpec
    puts the whole spec into --graph-json and constructForRawDeployment names it after the graph
    (pkg/controller/v1alpha1/inferencegraph/controller.go, raw_ig.go)."""
    spec = copy.deepcopy(graph["spec"])
    for node in spec["nodes"].values():
        for step in node.get("steps") or []:
            if step.get("serviceName") and not step.get("serviceUrl"):
                step["serviceUrl"] = service_urls[step["serviceName"]]
    name = graph["metadata"]["name"]
    labels = {**(graph["metadata"].get("labels") or {}), INFERENCE_GRAPH_LABEL: name, "app": f"isvc.{name}"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": graph["metadata"]["namespace"],
            "generation": generation,
            "labels": labels,
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": f"isvc.{name}"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": name, "image": "kserve/router", "args": ["--graph-json", json.dumps(spec)]}
                    ],
                    "automountServiceAccountToken": False,
                },
            },
        },
        "status": {
            "observedGeneration": generation,
            "replicas": 1,
            "updatedReplicas": 1,
            "availableReplicas": 1,
            "conditions": [{"type": "Available", "status": "True"}],
        },
    }


def graph_status(deployment_doc: dict[str, Any], url: str) -> dict[str, Any]:
    """PropagateRawStatus (raw_ig.go): Ready when the Deployment is Available; observedGeneration is
    the Deployment's, not the graph's."""
    available = any(
        c["type"] == "Available" and c["status"] == "True" for c in deployment_doc["status"].get("conditions") or []
    )
    status: dict[str, Any] = {
        "observedGeneration": deployment_doc["status"]["observedGeneration"],
        "deploymentMode": "Standard",
    }
    if available:
        status.update(url=url, conditions=[_condition("Ready", "True")])
    return status
