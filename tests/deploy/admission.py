"""The admission rules a cluster applies after schema validation, rebuilt from the webhooks' code.

Schema validation (crd_schema.py) says a manifest is well-formed; these say whether the webhooks
let it in. Each rule names the upstream file and function it follows:

- KServe's InferenceService, ServingRuntime and InferenceGraph validating webhooks
  (kserve/kserve: pkg/apis/serving/v1beta1/inference_service_validation.go, component.go,
  pkg/webhook/admission/servingruntime/servingruntime_webhook.go,
  pkg/apis/serving/v1alpha1/inference_graph_validation.go), after its defaulter.
- Knative Serving's webhook, which judges the Knative Service KServe writes in Knative mode
  (knative/serving: pkg/apis/serving/fieldmask.go, k8s_validation.go, pkg/apis/config/features.go),
  with a given set of feature flags (config-features).
- KEDA's ScaledObject webhook (kedacore/keda: apis/keda/v1alpha1/scaledobject_webhook.go).

`admit(objects, ...)` returns every denial for a rendered set of objects; an empty list means a
stock cluster with those settings accepts them. To check new kinds (an InferenceGraph, a
transformer), render them and pass them in: each kind is dispatched to its webhook's rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import kserve_sim

# -- Knative feature flags ----------------------------------------------------------------------------

# config-features keys (features.go) and their defaults (defaultFeaturesConfig); "enabled" and
# "allowed" both let the field through the masks, "disabled" masks it.
KNATIVE_DEFAULT_FEATURES: Mapping[str, str] = {
    "kubernetes.podspec-affinity": "disabled",
    "kubernetes.podspec-topologyspreadconstraints": "disabled",
    "kubernetes.podspec-hostaliases": "disabled",
    "kubernetes.podspec-fieldref": "disabled",
    "kubernetes.podspec-nodeselector": "disabled",
    "kubernetes.podspec-runtimeclassname": "disabled",
    "kubernetes.podspec-securitycontext": "disabled",
    "kubernetes.podspec-shareprocessnamespace": "disabled",
    "kubernetes.podspec-hostipc": "disabled",
    "kubernetes.podspec-hostpid": "disabled",
    "kubernetes.podspec-hostnetwork": "disabled",
    "kubernetes.podspec-priorityclassname": "disabled",
    "kubernetes.podspec-schedulername": "disabled",
    "kubernetes.containerspec-addcapabilities": "disabled",
    "kubernetes.podspec-tolerations": "disabled",
    "kubernetes.podspec-volumes-emptydir": "enabled",
    "kubernetes.podspec-volumes-hostpath": "disabled",
    "kubernetes.podspec-volumes-csi": "disabled",
    "kubernetes.podspec-volumes-ephemeral": "disabled",
    "kubernetes.podspec-persistent-volume-claim": "disabled",
    "kubernetes.podspec-init-containers": "disabled",
    "kubernetes.podspec-dnspolicy": "disabled",
    "kubernetes.podspec-dnsconfig": "disabled",
    "secure-pod-defaults": "disabled",
}


def features(**enabled: str) -> dict[str, str]:
    """Knative's defaults with some flags changed: features(**{"kubernetes.podspec-affinity": "enabled"})."""
    unknown = set(enabled) - set(KNATIVE_DEFAULT_FEATURES)
    if unknown:
        raise KeyError(f"not a Knative feature flag modelled here: {sorted(unknown)}")
    return {**KNATIVE_DEFAULT_FEATURES, **{k: v.lower() for k, v in enabled.items()}}


@dataclass(frozen=True)
class Denial:
    webhook: str
    rule: str  # upstream file: function
    message: str

    def __str__(self) -> str:
        return f"{self.webhook} ({self.rule}): {self.message}"


# -- Knative: fieldmask.go + k8s_validation.go -----------------------------------------------------------

_KNATIVE = "validation.webhook.serving.knative.dev"
# PodSpecMask: always allowed, and the fields each flag lets through.
_POD_ALWAYS = {"serviceAccountName", "containers", "volumes", "imagePullSecrets", "enableServiceLinks"}
_POD_FLAGGED = {
    "affinity": "kubernetes.podspec-affinity",
    "topologySpreadConstraints": "kubernetes.podspec-topologyspreadconstraints",
    "hostAliases": "kubernetes.podspec-hostaliases",
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "tolerations": "kubernetes.podspec-tolerations",
    "securityContext": "kubernetes.podspec-securitycontext",
    "shareProcessNamespace": "kubernetes.podspec-shareprocessnamespace",
    "priorityClassName": "kubernetes.podspec-priorityclassname",
    "schedulerName": "kubernetes.podspec-schedulername",
    "initContainers": "kubernetes.podspec-init-containers",
    "dnsPolicy": "kubernetes.podspec-dnspolicy",
    "dnsConfig": "kubernetes.podspec-dnsconfig",
    "hostIPC": "kubernetes.podspec-hostipc",
    "hostPID": "kubernetes.podspec-hostpid",
    "hostNetwork": "kubernetes.podspec-hostnetwork",
}
_POD_SECURITY_CONTEXT = {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "supplementalGroups", "seccompProfile"}
_CONTAINER = {
    "name",
    "args",
    "command",
    "env",
    "workingDir",
    "envFrom",
    "image",
    "imagePullPolicy",
    "livenessProbe",
    "ports",
    "readinessProbe",
    "resources",
    "securityContext",
    "startupProbe",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "volumeMounts",
}
_CONTAINER_SECURITY_CONTEXT = {
    "capabilities",
    "readOnlyRootFilesystem",
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "allowPrivilegeEscalation",
    "seccompProfile",
}
_PROBE = {
    "httpGet",
    "tcpSocket",
    "exec",
    "grpc",
    "initialDelaySeconds",
    "timeoutSeconds",
    "periodSeconds",
    "successThreshold",
    "failureThreshold",
    "terminationGracePeriodSeconds",
}
_VOLUME_SOURCES_ALWAYS = {"secret", "configMap", "projected"}
_VOLUME_FLAGGED = {
    "emptyDir": "kubernetes.podspec-volumes-emptydir",
    "persistentVolumeClaim": "kubernetes.podspec-persistent-volume-claim",
    "hostPath": "kubernetes.podspec-volumes-hostpath",
    "csi": "kubernetes.podspec-volumes-csi",
    "ephemeral": "kubernetes.podspec-volumes-ephemeral",
}
# networking.BackendHTTPPort, BackendHTTP2Port, QueueAdminPort, the two metrics ports, profiling.
_RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091, 8008}
_PORT_NAMES = {"", "h2c", "http1"}
_RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
# RevisionSpec fields beside the pod spec in a revision template.
_REVISION_FIELDS = {"timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds", "containerConcurrency"}


def _on(flags: Mapping[str, str], key: str) -> bool:
    return flags.get(key, KNATIVE_DEFAULT_FEATURES.get(key, "disabled")) != "disabled"


def _disallowed(where: str, fields: Iterable[str]) -> list[str]:
    return [f"must not set the field(s): {where}.{f}".replace("..", ".") for f in sorted(fields)]


def knative_pod_spec(spec: dict[str, Any], flags: Mapping[str, str], where: str = "spec.template.spec") -> list[str]:
    """ValidatePodSpec: PodSpecMask, PodSecurityContextMask, the containers and their one port,
    volumes and mounts, each under the feature flags."""
    spec = {k: v for k, v in spec.items() if k not in _REVISION_FIELDS}
    allowed = set(_POD_ALWAYS) | {f for f, key in _POD_FLAGGED.items() if _on(flags, key)}
    if spec.get("automountServiceAccountToken") is False:
        allowed.add("automountServiceAccountToken")  # only false may be set
    if _on(flags, "secure-pod-defaults"):
        allowed.add("securityContext")
    found = _disallowed(where, set(spec) - allowed)
    psc = spec.get("securityContext")
    if psc is not None and "securityContext" in allowed:
        keep = set(_POD_SECURITY_CONTEXT) if _on(flags, "kubernetes.podspec-securitycontext") else {"seccompProfile"}
        found += _disallowed(f"{where}.securityContext", set(psc) - keep)
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for i, volume in enumerate(spec.get("volumes") or []):
        sources = set(volume) - {"name"}
        ok = _VOLUME_SOURCES_ALWAYS | {s for s, key in _VOLUME_FLAGGED.items() if _on(flags, key)}
        found += _disallowed(f"{where}.volumes[{i}]", sources - ok)
    containers = spec.get("containers") or []
    ports = [p for c in containers for p in c.get("ports") or []]
    if len(ports) > 1:
        found.append(f"more than one container port is set: {where}.containers[*].ports")
    port_name = (ports[0].get("name") if ports else "") or "http"
    for i, container in enumerate(containers):
        found += _knative_container(container, flags, volumes, port_name, f"{where}.containers[{i}]")
    return found


def _knative_container(
    c: dict[str, Any], flags: Mapping[str, str], volumes: dict[str, Any], port_name: str, where: str
) -> list[str]:
    """ValidateUserContainer / validate: ContainerMask, SecurityContextMask, CapabilitiesMask,
    validateContainerPorts, validateProbe, validateReadinessProbe, validateVolumeMounts."""
    found = _disallowed(where, set(c) - _CONTAINER)
    if c.get("name") == "queue-proxy":
        found.append(f'{where}.name: "queue-proxy" is a reserved container name')
    for env in c.get("env") or []:
        if env["name"] in _RESERVED_ENV:
            found.append(f"{where}.env: {env['name']} is a reserved environment variable")
    sc = c.get("securityContext") or {}
    allowed_sc = set(_CONTAINER_SECURITY_CONTEXT) | ({"privileged"} if sc.get("privileged") is False else set())
    found += _disallowed(f"{where}.securityContext", set(sc) - allowed_sc)
    if (sc.get("capabilities") or {}).get("add") and not _on(flags, "kubernetes.containerspec-addcapabilities"):
        found += _disallowed(f"{where}.securityContext.capabilities", ["add"])
    if c.get("ports"):
        port = c["ports"][0]
        found += _disallowed(f"{where}.ports", set(port) - {"containerPort", "name", "protocol"})
        if port.get("containerPort") in _RESERVED_PORTS:
            found.append(f"{where}.ports.containerPort: {port['containerPort']} is a reserved port")
        if port.get("name", "") not in _PORT_NAMES:
            found.append(f"{where}.ports: Port name {port['name']} is not allowed")
        if port.get("protocol", "TCP") != "TCP":
            found.append(f"{where}.ports.protocol: invalid value {port['protocol']}")
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(kind)
        if probe is None:
            continue
        found += _disallowed(f"{where}.{kind}", set(probe) - _PROBE)
        handlers = [h for h in ("httpGet", "tcpSocket", "exec", "grpc") if h in probe]
        if len(handlers) != 1:
            found.append(f"{where}.{kind}: expected exactly one of httpGet, tcpSocket, exec, grpc")
        for h in ("httpGet", "tcpSocket"):
            port = (probe.get(h) or {}).get("port")
            if isinstance(port, str) and port != port_name:
                found.append(f"{where}.{kind}.{h}.port: Probe port must match container port")
        if kind == "readinessProbe":
            found += _readiness(probe, f"{where}.{kind}")
    for i, mount in enumerate(c.get("volumeMounts") or []):
        volume = volumes.get(mount.get("name"))
        if volume is None:
            found.append(f"{where}.volumeMounts[{i}].name: volumeMount has no matching volume")
        elif not {"emptyDir", "persistentVolumeClaim", "ephemeral"} & set(volume) and not mount.get("readOnly"):
            found.append(f"{where}.volumeMounts[{i}].readOnly: volume mount should be readOnly for this type of volume")
    return found


def _readiness(probe: dict[str, Any], where: str) -> list[str]:
    """validateReadinessProbe after RevisionSpec.applyReadinessProbeDefaults (revision_defaults.go)."""
    period = probe.get("periodSeconds", 0)
    success = probe.get("successThreshold") or 1
    failure = probe.get("failureThreshold") or (3 if period else 0)
    timeout = probe.get("timeoutSeconds") or (1 if period else 0)
    found = []
    if success < 1:
        found.append(f"{where}.successThreshold: expected 1 <= {success}")
    if period == 0 and (probe.get("failureThreshold") or probe.get("timeoutSeconds")):
        found.append(f"{where}: failureThreshold and timeoutSeconds are disallowed when periodSeconds is zero")
    if period and (timeout < 1 or failure < 1):
        found.append(f"{where}: timeoutSeconds and failureThreshold must be >= 1")
    return found


# -- KServe: InferenceService -----------------------------------------------------------------------------

_ISVC = "inferenceservice.kserve-webhook-server.validator"
_ISVC_RULES = "inference_service_validation.go"
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_AUTOSCALER_CLASSES = {"hpa", "external", "keda", "none"}  # constants.AutoscalerAllowedClassList


def _deny(webhook: str, rule: str, message: str) -> Denial:
    return Denial(webhook, rule, message)


def _hpa_rules(ext: dict[str, Any]) -> str | None:
    """validateScalingHPACompExtension."""
    metric = ext.get("scaleMetric", "cpu")
    if metric not in ("cpu", "memory"):
        return f"[{metric}] is not a supported metric"
    target = ext.get("scaleTarget")
    if target is not None:
        # Go's precedence: `metric == cpu && target < 1 || target > 100`.
        if (metric == "cpu" and target < 1) or target > 100:
            return "the target utilization percentage should be a [1-100] integer"
        if metric == "memory" and target < 1:
            return "the target memory should be greater than 1 MiB"
    for m in (ext.get("autoScaling") or {}).get("metrics") or []:
        if m.get("type") != "Resource":
            return f"invalid HPA metric source type with value [{m.get('type')}],valid metric source types are Resource"
    return None


def _keda_rules(ext: dict[str, Any]) -> str | None:
    """validateScalingKedaCompExtension."""
    if ext.get("scaleMetric") is not None:
        return "ScaleMetric is not supported for KEDA"
    for m in (ext.get("autoScaling") or {}).get("metrics") or []:
        if m.get("type") == "External":
            external = m.get("external") or {}
            if not (external.get("metric") or {}).get("query"):
                return "the query should not be empty"
            if (external.get("target") or {}).get("value") is None:
                return "the target threshold value should not be empty"
        elif m.get("type") not in ("Resource", "PodMetric"):
            return f"unknown KEDA metric type with value [{m.get('type')}].Valid types are Resource,External,PodMetric"
    return None


def _kpa_rules(ext: dict[str, Any]) -> str | None:
    """validateScalingKPACompExtension."""
    if ext.get("deploymentStrategy") is not None:
        return "customizing deploymentStrategy is only supported for raw deployment mode"
    metric = ext.get("scaleMetric", "concurrency")
    if metric not in ("concurrency", "rps"):
        return f"[{metric}] is not a supported metric"
    if metric == "rps" and ext.get("scaleTarget") is not None and ext["scaleTarget"] < 1:
        return "the target for rps should be greater than 1"
    return None


def inference_service(isvc: dict[str, Any], old: dict[str, Any] | None = None) -> list[Denial]:
    """InferenceServiceValidator.ValidateCreate / ValidateUpdate on the defaulted object."""
    isvc = kserve_sim.defaulted(isvc)
    annotations = isvc["metadata"].get("annotations") or {}
    predictor = isvc["spec"]["predictor"]
    found: list[Denial] = []

    def deny(function: str, message: str) -> None:
        found.append(_deny(_ISVC, f"{_ISVC_RULES}: {function}", message))

    if old is not None:
        status_mode = (old.get("status") or {}).get("deploymentMode")
        new_mode = annotations.get("serving.kserve.io/deploymentMode")
        parsed = {"RawDeployment": "Standard", "Serverless": "Knative"}.get(status_mode, status_mode)
        if status_mode and new_mode and new_mode != parsed:
            deny(
                "validateDeploymentMode",
                f"update rejected: deploymentMode cannot be changed from '{parsed}' to '{new_mode}'",
            )
        old_name = old["spec"]["predictor"].get("name", "")
        old_uri = (old["spec"]["predictor"].get("model") or {}).get("storageUri")
        if predictor.get("name", "") != old_name and (predictor.get("model") or {}).get("storageUri") == old_uri:
            deny("validatePredictorNameChange", "predictor.name change requires a model change (e.g. storageUri)")
    name = isvc["metadata"]["name"]
    if not _NAME.match(name):
        deny("validateInferenceServiceName", f'the InferenceService "{name}" is invalid: a InferenceService name ...')
    cls = annotations.get("serving.kserve.io/autoscalerClass")
    if cls is not None and cls not in _AUTOSCALER_CLASSES:
        deny("validateInferenceServiceAutoscaler", f"[{cls}] is not a supported autoscaler class type")
    model = predictor.get("model") or {}
    if any(e["name"] == "PYTHONPATH" for e in model.get("env") or []):
        deny("validateBlockedEnvVars", 'setting PYTHONPATH in container "kserve-container" is not allowed')
    if model.get("name"):
        deny("validatePredictor", "the 'name' field is not allowed in standard predictor")
    # validateCollocationStorageURI: a collocated transformer gets the model the predictor's way.
    for container in predictor.get("containers") or []:
        if container.get("name") == "transformer-container":
            if any(e["name"] == "STORAGE_URI" for e in container.get("env") or []):
                deny("validateCollocationStorageURI", "storage uri should not be specified in transformer container")
            break
    transformer = isvc["spec"].get("transformer")
    if transformer is not None and not transformer.get("containers"):
        # validateExactlyOneImplementation (component.go): a transformer is its containers.
        deny("validateExactlyOneImplementation", "exactly one of [PodSpec] must be specified in TransformerSpec")
    # Each component in turn (predictor, transformer), as validateInferenceService loops over them.
    for component in (predictor, transformer):
        if component is not None:
            for function, message in _extension_rules(component, annotations):
                deny(function, message)
    found += _canary_specs(isvc)
    return found


def _extension_rules(ext: dict[str, Any], annotations: dict[str, str]) -> list[tuple[str, str]]:
    """ComponentExtensionSpec.Validate (component.go: validateContainerConcurrency, validateReplicas)
    and validateAutoScalingCompExtension, for one component."""
    found = []
    if ext.get("containerConcurrency", 0) < 0:
        found.append(("ComponentExtensionSpec.Validate", "parallelism cannot be less than 0"))
    minimum, maximum = ext.get("minReplicas", 1), ext.get("maxReplicas", 0)
    if minimum < 0:
        found.append(("validateReplicas", "'MinReplicas' cannot be less than 0"))
    if maximum < 0:
        found.append(("validateReplicas", "'MaxReplicas' cannot be less than 0"))
    if maximum and minimum > maximum:
        found.append(("validateReplicas", "'MinReplicas' cannot be greater than MaxReplicas"))
    mode, cls = (
        annotations.get("serving.kserve.io/deploymentMode"),
        annotations.get("serving.kserve.io/autoscalerClass"),
    )
    if mode == "Standard":
        rule = {"hpa": _hpa_rules, "keda": _keda_rules}.get(cls or "")
    elif annotations.get("autoscaling.knative.dev/class") == "hpa.autoscaling.knative.dev":
        rule = _hpa_rules
    else:
        rule = _kpa_rules
    if rule is not None and (message := rule(ext)):
        found.append((f"validateAutoScalingCompExtension -> {rule.__doc__.strip().rstrip('.')}", message))
    return found


def _canary_specs(isvc: dict[str, Any]) -> list[Denial]:
    """validateCanarySpecs."""
    canaries = isvc["spec"].get("canary") or []
    if not canaries:
        return []
    mode = (isvc["metadata"].get("annotations") or {}).get("serving.kserve.io/deploymentMode")
    rule = f"{_ISVC_RULES}: validateCanarySpecs"
    if mode != "Standard":
        return [_deny(_ISVC, rule, "canary is only supported in Standard deployment mode")]
    found, names, total = [], set(), 0
    stable = isvc["spec"]["predictor"]
    for i, canary in enumerate(canaries):
        name = canary["predictor"].get("name", "")
        if not name:
            found.append(f"canary[{i}] predictor.name is required")
        elif name in names:
            found.append(f'canary predictor.name "{name}" is duplicated')
        elif name == stable.get("name", ""):
            found.append(f'canary predictor.name "{name}" conflicts with stable predictor name')
        names.add(name)
        if not 0 <= canary["trafficPercent"] <= 100:
            found.append(f'canary "{name}" trafficPercent must be between 0 and 100, got {canary["trafficPercent"]}')
        total += canary["trafficPercent"]
        for field in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
            if canary["predictor"].get(field) is not None:
                found.append(f'canary "{name}" must not set {field} (canary uses fixed replicas)')
    if total > 100:
        found.append(f"sum of canary trafficPercent values ({total}) must be <= 100")
    return [_deny(_ISVC, rule, m) for m in found]


# -- KServe: ServingRuntime and InferenceGraph -----------------------------------------------------------------

_SR_RULES = "servingruntime_webhook.go"


def serving_runtimes(runtimes: list[dict[str, Any]]) -> list[Denial]:
    """ServingRuntimeValidator.Handle, admitting each runtime in turn against those already in its
    namespace: validateModelFormatPrioritySame, validateServingRuntimePriority, validateBlockedEnvVars."""
    found: list[Denial] = []
    admitted: list[dict[str, Any]] = []
    for rt in runtimes:
        spec = rt["spec"]
        webhook = f"{rt['kind'].lower()}.kserve-webhook-server.validator"
        for other in admitted:
            if other["metadata"].get("namespace") != rt["metadata"].get("namespace"):
                continue
            if (message := _priority_clash(spec, other["spec"])) is not None:
                found.append(
                    _deny(
                        webhook,
                        f"{_SR_RULES}: validateServingRuntimePriority",
                        f"{message} in the servingruntimes {other['metadata']['name']} and "
                        f"{rt['metadata']['name']} in namespace {rt['metadata'].get('namespace')}",
                    )
                )
        for c in spec.get("containers") or []:
            if any(e["name"] == "PYTHONPATH" for e in c.get("env") or []):
                found.append(
                    _deny(webhook, f"{_SR_RULES}: validateBlockedEnvVars", "setting PYTHONPATH is not allowed")
                )
        admitted.append(rt)
    return found


def _auto_select(fmt: dict[str, Any]) -> bool:
    return bool(fmt.get("autoSelect"))


def _priority_clash(new: dict[str, Any], existing: dict[str, Any]) -> str | None:
    if bool(new.get("multiModel")) != bool(existing.get("multiModel")) or existing.get("disabled"):
        return None
    if not set(new.get("protocolVersions") or []) & set(existing.get("protocolVersions") or []):
        return None
    for e in existing.get("supportedModelFormats") or []:
        for n in new.get("supportedModelFormats") or []:
            same = e["name"].lower() == n["name"].lower() and e.get("version") == n.get("version")
            if same and _auto_select(e) and _auto_select(n) and e.get("priority") is not None:
                if e.get("priority") == n.get("priority"):
                    return f"same priority assigned for the model format {n['name']}"
    return None


_IG_RULES = "inference_graph_validation.go"


def inference_graph(graph: dict[str, Any]) -> list[Denial]:
    """validateInferenceGraph: name, a root node, unique step names, one target per step, splitter
    weights that sum to 100."""
    webhook = "inferencegraph.kserve-webhook-server.validator"
    name = graph["metadata"]["name"]
    nodes = (graph.get("spec") or {}).get("nodes") or {}
    found: list[tuple[str, str]] = []
    if not _NAME.match(name):
        found.append(("validateInferenceGraphName", f'The InferenceGraph "{name}" is invalid'))
    if "root" not in nodes:
        found.append(
            (
                "validateInferenceGraphRouterRoot",
                "root node not found, InferenceGraph needs a node with name 'root' as the root node of the graph",
            )
        )
    for node_name, node in nodes.items():
        seen = set()
        weight = 0
        for i, step in enumerate(node.get("steps") or []):
            step_name = step.get("name", "")
            if step_name and step_name in seen:
                found.append(
                    (
                        "validateInferenceGraphStepNameUniqueness",
                        f'Node "{node_name}" of InferenceGraph "{name}" contains more than one step '
                        f'with name "{step_name}"',
                    )
                )
            seen.add(step_name)
            targets = [k for k in ("nodeName", "serviceName", "serviceUrl") if step.get(k)]
            if not targets:
                found.append(
                    (
                        "validateInferenceGraphSingleStepTargets",
                        f'Step {i} ("{step_name}") in node "{node_name}" of InferenceGraph "{name}" '
                        "does not specify an inference target",
                    )
                )
            elif len(targets) > 1:
                found.append(
                    (
                        "validateInferenceGraphSingleStepTargets",
                        f'Step {i} ("{step_name}") in node "{node_name}" of InferenceGraph "{name}" '
                        "specifies more than one of nodeName, serviceName, serviceUrl",
                    )
                )
            if node.get("routerType") == "Splitter":
                if step.get("weight") is None:
                    found.append(
                        (
                            "validateInferenceGraphSplitterWeight",
                            f"InferenceGraph[{name}] Node[{node_name}] Route[{step.get('serviceName', '')}] "
                            "missing the 'Weight'",
                        )
                    )
                weight += step.get("weight") or 0
        if node.get("routerType") == "Splitter" and weight != 100:
            found.append(
                (
                    "validateInferenceGraphSplitterWeight",
                    f"InferenceGraph[{name}] Node[{node_name}] splitter node: the sum of traffic weights "
                    "for all routing targets should be 100",
                )
            )
    return [_deny(webhook, f"{_IG_RULES}: {fn}", msg) for fn, msg in found]


# -- KEDA ---------------------------------------------------------------------------------------------------


def scaled_object(so: dict[str, Any]) -> list[Denial]:
    """ScaledObject webhook: verifyReplicaCount (CheckReplicaCountBoundsAreValid), verifyTriggers
    (ValidateTriggers), verifyName."""
    webhook, rules = "vscaledobject.kb.io", "scaledobject_webhook.go"
    spec = so["spec"]
    found = []
    minimum, maximum = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if minimum > maximum:
        found.append(
            _deny(
                webhook,
                f"{rules}: verifyReplicaCount",
                f"MinReplicaCount={minimum} must be less than MaxReplicaCount={maximum}",
            )
        )
    if not spec.get("triggers"):
        found.append(_deny(webhook, f"{rules}: verifyTriggers", "no triggers defined in the ScaledObject/ScaledJob"))
    if len(so["metadata"]["name"]) > 63:
        found.append(
            _deny(webhook, f"{rules}: verifyName", f"scaledobject name {so['metadata']['name']!r} is too long")
        )
    return found


# -- everything at once ------------------------------------------------------------------------------------


def admit(
    objects: list[dict[str, Any]],
    *,
    knative_flags: Mapping[str, str] = KNATIVE_DEFAULT_FEATURES,
    default_mode: str = "Knative",
    existing: list[dict[str, Any]] = (),
) -> list[Denial]:
    """Every denial for `objects` applied to a namespace already holding `existing`. An
    InferenceService without a deploymentMode annotation takes `default_mode` (the cluster's
    inferenceservice-config); in Knative mode the Knative Service KServe would write for it is
    judged by Knative's webhook with `knative_flags`; with the keda class, the ScaledObject KServe
    would write is judged by KEDA's."""
    found: list[Denial] = []
    runtimes = [o for o in [*existing, *objects] if o["kind"] in ("ServingRuntime", "ClusterServingRuntime")]
    # Runtimes already in the namespace were admitted; each new one is checked against them.
    found += serving_runtimes(runtimes)
    by_name = {(r["kind"], r["metadata"]["name"]): r for r in runtimes}
    for obj in objects:
        if obj["kind"] == "InferenceGraph":
            found += inference_graph(obj)
        elif obj["kind"] == "ScaledObject":
            found += scaled_object(obj)
        elif obj["kind"] == "InferenceService":
            found += inference_service(obj)
            isvc = kserve_sim.defaulted(obj)
            annotations = isvc["metadata"].get("annotations") or {}
            mode = annotations.get("serving.kserve.io/deploymentMode", default_mode)
            runtime_name = (isvc["spec"]["predictor"].get("model") or {}).get("runtime")
            runtime = by_name.get(("ServingRuntime", runtime_name)) or by_name.get(
                ("ClusterServingRuntime", runtime_name)
            )
            if runtime is None:
                continue
            if mode == "Knative":
                ksvc = kserve_sim.knative_service(isvc, runtime)
                found += [
                    Denial(_KNATIVE, "fieldmask.go + k8s_validation.go: ValidatePodSpec", m)
                    for m in knative_pod_spec(ksvc["spec"]["template"]["spec"], knative_flags)
                ]
            elif annotations.get("serving.kserve.io/autoscalerClass") == "keda":
                found += scaled_object(kserve_sim.scaled_object(isvc))
    return found
