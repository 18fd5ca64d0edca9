"""Every overlay renders with the pinned kubectl's kustomize, and says what the issue asks of it."""

import pytest

from .conftest import BUILDS, OVERLAYS

EXPECTED_OVERLAYS = {"cpu", "gpu", "serverless", "raw", "raw-keda", "canary"}


def isvc(objects):
    (found,) = [o for o in objects if o["kind"] == "InferenceService"]
    return found


def runtime(objects):
    (found,) = [o for o in objects if o["kind"] in ("ServingRuntime", "ClusterServingRuntime")]
    return found


def test_the_issue_s_overlays_exist():
    assert EXPECTED_OVERLAYS <= set(OVERLAYS)


@pytest.mark.parametrize("build", BUILDS)
def test_every_object_carries_the_app_kubernetes_io_labels(rendered, build):
    for obj in rendered(build):
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "image-classifier", obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/part-of") == "image-classifier"
        assert labels.get("app.kubernetes.io/managed-by") == "kustomize"


def test_no_kustomization_uses_deprecated_common_labels():
    from .conftest import REPO_ROOT

    for path in (REPO_ROOT / "inferenceservices").rglob("kustomization.yaml"):
        assert "commonLabels" not in path.read_text(), path


def test_the_data_scientists_inferenceservice_names_only_format_uri_and_resources():
    import yaml

    from .conftest import REPO_ROOT

    doc = yaml.safe_load((REPO_ROOT / "inferenceservices/base/inferenceservice.yaml").read_text())
    assert set(doc["spec"]["predictor"]) == {"model"}
    assert set(doc["spec"]["predictor"]["model"]) == {"modelFormat", "storageUri", "resources"}


def test_the_runtime_serves_the_model_format_on_8080_and_h2c_8081(rendered):
    rt = runtime(rendered("base"))
    assert rt["metadata"]["name"] == "kserve-pytorch-image-classifier"
    assert rt["spec"]["supportedModelFormats"] == [
        {"name": "pytorch-image-classifier", "version": "1", "autoSelect": True, "priority": 1}
    ]
    assert rt["spec"]["protocolVersions"] == ["v1", "v2", "grpc-v2"]
    (container,) = rt["spec"]["containers"]
    assert container["ports"] == [
        {"name": "http1", "containerPort": 8080, "protocol": "TCP"},
        {"name": "h2c", "containerPort": 8081, "protocol": "TCP"},
    ]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/models/{{.Name}}/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert container["image"] == "ghcr.io/example/image-classifier-predictor:0.1.0"


def test_the_cluster_runtime_is_the_same_runtime_cluster_wide(rendered):
    cluster = runtime(rendered("cluster-runtime"))
    namespaced = runtime(rendered("runtime"))
    assert cluster["kind"] == "ClusterServingRuntime"
    assert cluster["spec"] == namespaced["spec"]
    assert "namespace" not in cluster["metadata"]


@pytest.mark.parametrize("overlay", sorted(EXPECTED_OVERLAYS))
def test_pods_meet_the_restricted_pod_security_standard(rendered, overlay):
    objects = rendered(f"overlays/{overlay}")
    pod = isvc(objects)["spec"]["predictor"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == "image-classifier-predictor"
    assert pod["automountServiceAccountToken"] is False
    (container,) = runtime(objects)["spec"]["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp": "tmp", "/home/predictor/.cache": "cache"}
    volumes = {v["name"]: v for v in runtime(objects)["spec"]["volumes"]}
    assert all("emptyDir" in volumes[name] for name in mounts.values())


def test_gpu_overlay_requests_a_gpu_on_gpu_nodes_only(rendered):
    pod = isvc(rendered("overlays/gpu"))["spec"]["predictor"]
    resources = pod["model"]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["true"]}]}]
    assert pod["tolerations"] == [{"key": "gpu-only", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]


def test_cpu_overlay_has_no_gpu(rendered):
    pod = isvc(rendered("overlays/cpu"))["spec"]["predictor"]
    assert "nvidia.com/gpu" not in pod["model"]["resources"]["limits"]
    assert "--device=cpu" in pod["model"]["args"]


def test_serverless_overlay_scales_on_concurrency_with_knative_kpa(rendered):
    objects = rendered("overlays/serverless")
    svc = isvc(objects)
    assert svc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert svc["metadata"]["annotations"]["autoscaling.knative.dev/class"] == "kpa.autoscaling.knative.dev"
    assert svc["spec"]["predictor"]["scaleMetric"] == "concurrency"
    assert svc["spec"]["predictor"]["scaleTarget"] > 0
    # Knative allows one container port: only the REST port survives in this mode.
    assert [p["containerPort"] for p in runtime(objects)["spec"]["containers"][0]["ports"]] == [8080]


def test_raw_overlay_uses_standard_mode_with_a_cpu_hpa(rendered):
    svc = isvc(rendered("overlays/raw"))
    annotations = svc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    assert (svc["spec"]["predictor"]["scaleMetric"], svc["spec"]["predictor"]["scaleTarget"]) == ("cpu", 70)


def test_raw_keda_overlay_scales_the_predictor_deployment_on_queue_depth(rendered):
    objects = rendered("overlays/raw-keda")
    svc = isvc(objects)
    assert svc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
    (scaled,) = [o for o in objects if o["kind"] == "ScaledObject"]
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "image-classifier-predictor",
    }
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"].startswith("sum(predictor_queue_depth{")
    assert scaled["spec"]["minReplicaCount"] == svc["spec"]["predictor"]["minReplicas"]


def test_canary_overlay_sends_a_share_to_a_new_storage_uri(rendered):
    base = isvc(rendered("overlays/serverless"))["spec"]["predictor"]
    canary = isvc(rendered("overlays/canary"))["spec"]["predictor"]
    assert canary["canaryTrafficPercent"] == 10
    assert canary["model"]["storageUri"] != base["model"]["storageUri"]


def test_network_policy_denies_by_default_and_allows_gateway_knative_monitoring_dns_storage(rendered):
    (policy,) = [o for o in rendered("base") if o["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    sources = [
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in spec["ingress"]
        for peer in rule["from"]
    ]
    assert sources == ["knative-serving", "istio-system", "monitoring"]
    egress_ports = sorted({(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]})
    assert egress_ports == [(53, "TCP"), (53, "UDP"), (443, "TCP")]


def test_deployer_role_is_least_privilege(rendered):
    (role,) = [o for o in rendered("base") if o["kind"] == "Role"]
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("serving.kserve.io",), ("inferenceservices",)): {"get", "list", "watch", "create", "patch", "delete"},
        (("",), ("pods", "events")): {"get", "list", "watch"},
    }
    flat = str(role["rules"])
    assert "*" not in flat and "secrets" not in flat


def test_predictor_service_account_carries_the_storage_secret_and_no_token(rendered):
    accounts = {o["metadata"]["name"]: o for o in rendered("base") if o["kind"] == "ServiceAccount"}
    predictor = accounts["image-classifier-predictor"]
    assert predictor["automountServiceAccountToken"] is False
    assert predictor["secrets"] == [{"name": "image-classifier-storage"}]


def test_monitoring_scrapes_metrics_and_ships_a_dashboard_with_the_key_panels(rendered):
    import json

    objects = rendered("base")
    (monitor,) = [o for o in objects if o["kind"] == "PodMonitor"]
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    (dashboard_cm,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert dashboard_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(dashboard_cm["data"]["image-classifier.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "predictor_requests_total",
        "predictor_request_seconds_bucket",
        "predictor_batch_size",
        "predictor_queue_depth",
        "predictor_device_memory_bytes",
    ):
        assert metric in exprs
