"""The manifests: every object named and placed by kustomize, instances that never share, and the
pod lifecycle (startup, drain, disruption, storage) each overlay promises."""

import json
import re
import shutil

import pytest
import yaml

from isvctl import manifests

from .conftest import (
    KUBECTL,
    MANIFESTS,
    OVERLAYS,
    REPO_ROOT,
    RUNTIME_IMAGE,
    FakeCluster,
    isvctl,
    kustomize,
    of_kind,
    render,
)

PREDICTOR_GRACE_PERIOD_S = 20  # predictor/__main__.py --grace_period_s default
PROGRESS_DEADLINE_S = 600  # Kubernetes' default progressDeadlineSeconds, and Knative's


def test_the_readme_overlays_exist():
    assert {"cpu", "gpu", "serverless", "raw", "raw-keda", "canary", "transformer", "transformer-collocated"} == set(
        OVERLAYS
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_names_its_deployment_mode(overlay):
    annotations = of_kind(render(overlay), "InferenceService")["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] in ("Knative", "Standard")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_two_names_give_disjoint_objects_each_selecting_its_own_pods(overlay):
    a, b = render(overlay, name="a", namespace="prod"), render(overlay, name="b", namespace="prod")
    names = {o["metadata"]["name"] for o in a}
    assert names.isdisjoint({o["metadata"]["name"] for o in b})
    assert all(o["metadata"]["namespace"] == "prod" for o in a)
    isvc = of_kind(a, "InferenceService")
    assert isvc["metadata"]["name"] == "a-image-classifier"
    assert isvc["spec"]["predictor"]["serviceAccountName"] == "a-image-classifier-predictor"
    assert isvc["spec"]["predictor"]["model"]["runtime"] == of_kind(a, "ServingRuntime")["metadata"]["name"]
    selectors = [of_kind(a, "PodMonitor")["spec"]["selector"], of_kind(a, "NetworkPolicy")["spec"]["podSelector"]]
    selectors += [o["spec"]["selector"] for o in a if o["kind"] == "PodDisruptionBudget"]
    assert all(s == {"matchLabels": {"serving.kserve.io/inferenceservice": "a-image-classifier"}} for s in selectors)
    (binding,) = [o for o in a if o["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == "a-image-classifier-deployer"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "a-image-classifier-deployer", "namespace": "prod"}
    ]


def test_the_keda_query_follows_the_name_and_namespace():
    isvc = of_kind(render("raw-keda", name="a", namespace="prod"), "InferenceService")
    (metric,) = isvc["spec"]["predictor"]["autoScaling"]["metrics"]
    assert (
        metric["external"]["metric"]["query"]
        == 'sum(predictor_queue_depth{namespace="prod", isvc="a-image-classifier", model_name="a-image-classifier"})'
    )


def test_undeploy_deletes_exactly_what_its_name_owns(capsys):
    out, _ = isvctl(capsys, ["undeploy", "--overlay", "raw-keda", "--name", "b", "--dry-run"], FakeCluster())
    deleted = [line.split()[-1].split("/")[1] for line in out.splitlines()[1:]]
    assert sorted(deleted) == sorted(o["metadata"]["name"] for o in render("raw-keda", name="b"))
    assert all(name.startswith("b-") for name in deleted)


def test_image_reaches_the_runtime_through_kustomize_images():
    objects = manifests.render(
        MANIFESTS, manifests.Instance("raw", "ml-serving", "", "reg.example.com/p@sha256:" + "a" * 64), KUBECTL
    )
    assert manifests.runtime_image(objects) == "reg.example.com/p@sha256:" + "a" * 64
    assert manifests.runtime_image(render("raw")) == RUNTIME_IMAGE


def test_the_settings_are_kustomize_settings(tmp_path):
    tree = tmp_path / "inferenceservices"
    shutil.copytree(MANIFESTS, tree)
    settings = tree / "instance" / "settings.yaml"
    doc = yaml.safe_load(settings.read_text())
    doc["data"].update(prometheusRelease="kube-prometheus-stack", gatewayNamespace="gateway-system")
    settings.write_text(yaml.safe_dump(doc))
    objects = manifests.render(tree, manifests.Instance("raw", "ml-serving"), KUBECTL)
    assert of_kind(objects, "PodMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    sources = [
        r["from"][0]["namespaceSelector"]["matchLabels"] for r in of_kind(objects, "NetworkPolicy")["spec"]["ingress"]
    ]
    assert {"kubernetes.io/metadata.name": "gateway-system"} in sources
    assert of_kind(render("raw"), "PodMonitor")["metadata"]["labels"]["release"] == "prometheus"


def runtime_container(objects):
    (container,) = of_kind(objects, "ServingRuntime")["spec"]["containers"]
    return container


def test_the_startup_probe_covers_the_longest_warm_up_within_the_progress_deadline():
    container = runtime_container(render("raw"))
    startup = container["startupProbe"]
    budget_s = startup["periodSeconds"] * startup["failureThreshold"]
    # --compile on a GPU: about a minute per bucket, six buckets by default (powers of two to 32).
    assert 6 * 60 <= budget_s < PROGRESS_DEADLINE_S
    assert "initialDelaySeconds" not in container["livenessProbe"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/models/{{.Name}}/ready"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_standard_mode_drains_after_the_endpoint_leaves_and_knative_mode_sets_nothing_it_refuses(overlay):
    predictor = of_kind(render(overlay), "InferenceService")["spec"]["predictor"]
    mode = of_kind(render(overlay), "InferenceService")["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    if mode == "Standard":
        pre_stop_s = predictor["model"]["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert predictor["terminationGracePeriodSeconds"] > pre_stop_s + PREDICTOR_GRACE_PERIOD_S
        assert predictor["securityContext"]["runAsNonRoot"] is True
    else:
        assert {"terminationGracePeriodSeconds", "securityContext"}.isdisjoint(predictor)
        assert "lifecycle" not in predictor["model"]
        assert predictor["timeout"] > PREDICTOR_GRACE_PERIOD_S  # Knative's grace period


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_disruption_budget_wherever_replicas_can_be_two_or_more(overlay):
    objects = render(overlay)
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    max_replicas = of_kind(objects, "InferenceService")["spec"]["predictor"].get("maxReplicas", 1)
    assert bool(budgets) == (max_replicas >= 2)
    for budget in budgets:
        assert budget["spec"]["maxUnavailable"] == 1


def _quantity_gi(text: str) -> float:
    return float(text.removesuffix("Gi"))


def test_ephemeral_storage_covers_the_empty_dirs():
    objects = render("raw")
    volumes = of_kind(objects, "ServingRuntime")["spec"]["volumes"]
    limits = sum(_quantity_gi(v["emptyDir"]["sizeLimit"]) for v in volumes)
    resources = runtime_container(objects)["resources"]
    assert _quantity_gi(resources["requests"]["ephemeral-storage"]) > limits
    assert _quantity_gi(resources["limits"]["ephemeral-storage"]) >= _quantity_gi(
        resources["requests"]["ephemeral-storage"]
    )


def test_the_gpu_overlay_runs_the_workers_the_benchmarks_justify_with_a_core_each():
    model = of_kind(render("gpu"), "InferenceService")["spec"]["predictor"]["model"]
    workers = int(next(a for a in model["args"] if a.startswith("--workers=")).split("=")[1])
    assert workers == 6
    assert "--workers" in (REPO_ROOT / "docs" / "BENCHMARKS.md").read_text()
    assert int(model["resources"]["requests"]["cpu"]) >= workers
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_meet_the_restricted_pod_security_standard(overlay):
    objects = render(overlay)
    predictor = of_kind(objects, "InferenceService")["spec"]["predictor"]
    assert predictor["automountServiceAccountToken"] is False
    sc = runtime_container(objects)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000
    assert sc["readOnlyRootFilesystem"] is True and sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_deployer_role_reads_what_isvctl_reads_and_nothing_else():
    role = of_kind(render("raw"), "Role")
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    read = {"get", "list", "watch"}
    assert rules == {
        (("serving.kserve.io",), ("inferenceservices",)): read | {"create", "patch", "delete"},
        (("",), ("pods", "events")): read,
        (("apps",), ("deployments",)): read,
        (("serving.knative.dev",), ("services",)): read,
        (("gateway.networking.k8s.io",), ("httproutes",)): read,
        (("autoscaling",), ("horizontalpodautoscalers",)): read,
        (("keda.sh",), ("scaledobjects",)): read,
    }
    assert "*" not in str(role["rules"]) and "secrets" not in str(role["rules"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_carries_the_app_kubernetes_io_labels(overlay):
    for obj in render(overlay):
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "image-classifier", obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "kustomize"


def test_no_kustomization_uses_deprecated_common_labels():
    for path in MANIFESTS.rglob("kustomization.yaml"):
        assert "commonLabels" not in path.read_text(), path


def test_the_data_scientists_inferenceservice_names_format_runtime_uri_and_resources():
    doc = yaml.safe_load((MANIFESTS / "base" / "inferenceservice.yaml").read_text())
    assert set(doc["spec"]["predictor"]["model"]) == {"modelFormat", "runtime", "storageUri", "resources"}


def test_the_dashboard_is_one_for_every_instance():
    (config_map,) = kustomize(MANIFESTS / "dashboard")
    dashboard = json.loads(config_map["data"]["image-classifier.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert re.findall(r'isvc="([^"]+)"', exprs) == ["$isvc"] * len(re.findall(r"isvc=", exprs))
    for metric in ("predictor_requests_total", "predictor_request_seconds_bucket", "predictor_queue_depth"):
        assert metric in exprs


def test_the_cluster_runtime_is_the_same_runtime_cluster_wide():
    (cluster_runtime,) = kustomize(MANIFESTS / "cluster-runtime")
    assert cluster_runtime["kind"] == "ClusterServingRuntime" and "namespace" not in cluster_runtime["metadata"]
