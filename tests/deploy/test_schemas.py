"""What `make deploy` applies, and every cluster moment the tests replay, is valid against the real
schemas: the vendored CRD schemas (strictly), the KServe SDK models, Kubernetes' own OpenAPI."""

import copy
import os
from pathlib import Path

import kubernetes_validate
import pytest

from . import crd_schema, kserve_sim
from .conftest import OVERLAYS, REPO_ROOT, of_kind, render
from .scenes import KnativeStory, StandardStory
from .strict_schema import KIND_TO_MODEL, sdk_errors

KUBERNETES_VERSION = "1.37.0"
CORE_KINDS = {"ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "ConfigMap", "PodDisruptionBudget", "Service"}
# The upstream CRDs sit beside the repository where they exist (not in CI); a checkout elsewhere
# points at them with CRDS_SHARED_DIR.
SHARED = Path(os.environ.get("CRDS_SHARED_DIR", REPO_ROOT.parent / "shared"))


def test_the_vendored_schemas_are_the_upstream_crds_without_descriptions():
    if not (SHARED / "kserve-crds").is_dir():
        pytest.skip(f"no upstream CRDs at {SHARED} to compare with (a clone with nothing beside it)")
    generated = crd_schema.generate(SHARED)
    vendored = {p.name: p.read_text() for p in crd_schema.VENDORED.iterdir()}
    assert vendored == generated, "regenerate: python -m tests.deploy.crd_schema ../shared"


def test_the_vendored_schemas_say_where_they_come_from():
    notes = (crd_schema.VENDORED / "README.md").read_text()
    for source in ("kserve/kserve", "kedacore/keda", "prometheus-operator/prometheus-operator", "ray-project/kuberay"):
        assert source in notes
    assert notes.count("License: Apache-2.0") == 4 and "commit" in notes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_its_real_schema(overlay):
    for obj in render(overlay, name="a", namespace="prod"):
        if obj["kind"] in CORE_KINDS:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        else:
            assert obj["kind"] in crd_schema.kinds(), f"{obj['kind']} is validated by nothing"
            assert crd_schema.errors(obj) == [], obj["kind"]
        if obj["kind"] in KIND_TO_MODEL:
            assert sdk_errors(obj) == [], obj["kind"]


def test_the_podmonitor_is_valid_against_the_prometheus_operator_crd():
    monitor = of_kind(render("serverless"), "PodMonitor")
    assert crd_schema.errors(monitor) == []
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    assert any("intervall" in e for e in crd_schema.errors(monitor))


def test_the_scaledobject_kserve_writes_for_raw_keda_is_valid_against_the_keda_crd():
    isvc = kserve_sim.defaulted(of_kind(render("raw-keda"), "InferenceService"))
    scaled = kserve_sim.scaled_object(isvc)
    assert crd_schema.errors(scaled) == []
    assert scaled["spec"]["triggers"][0]["metadata"]["threshold"] == "64"
    scaled["spec"]["minReplicaCount"] = "two"
    assert crd_schema.errors(scaled) != []


def test_a_misspelt_field_is_rejected_by_both_validators():
    svc = of_kind(render("canary"), "InferenceService")
    typo = copy.deepcopy(svc)
    typo["spec"]["predictor"]["canaryTrafficPercnt"] = typo["spec"]["predictor"].pop("canaryTrafficPercent")
    assert any("canaryTrafficPercnt" in e for e in crd_schema.errors(typo))
    assert sdk_errors(typo) == ["spec.predictor.canaryTrafficPercnt: unknown field of V1beta1PredictorSpec"]


def test_a_misspelt_container_field_in_the_runtime_is_rejected():
    rt = of_kind(render("raw"), "ServingRuntime")
    rt["spec"]["containers"][0]["readinesProbe"] = rt["spec"]["containers"][0].pop("readinessProbe")
    assert crd_schema.errors(rt) != []
    assert sdk_errors(rt) == ["spec.containers[0].readinesProbe: unknown field of V1Container"]


def test_a_wrong_type_is_rejected():
    svc = of_kind(render("gpu"), "InferenceService")
    svc["spec"]["predictor"]["minReplicas"] = "two"
    assert crd_schema.errors(svc) != []
    assert sdk_errors(svc) == ["spec.predictor.minReplicas: expected int, got 'two'"]


def test_a_misspelt_core_field_is_rejected():
    policy = of_kind(render("raw"), "NetworkPolicy")
    policy["spec"]["podSelektor"] = policy["spec"].pop("podSelector")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)


def _moments():
    knative, standard, gateway = KnativeStory(), StandardStory(), StandardStory("raw", gateway=True)
    yield from knative.moment()
    knative.patch({"spec": {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": "s3://m/v2"}}}})
    knative.knative_creates_revision()
    knative.revision_ready()
    yield from knative.moment()
    yield from standard.moment()
    gateway.patch(
        {
            "spec": {
                "canary": [
                    {
                        "trafficPercent": 20,
                        "predictor": {
                            "name": "g2",
                            "model": {
                                "name": "",
                                "modelFormat": {"name": "pytorch-image-classifier"},
                                "storageUri": "s3://m/v2",
                            },
                        },
                    }
                ]
            }
        }
    )
    gateway.kserve_reconciles()
    gateway.rolled_out("image-classifier-g2-predictor")
    yield from gateway.moment()


def test_every_replayed_inferenceservice_status_is_valid_against_the_crd():
    for doc in _moments():
        if doc["kind"] == "InferenceService":
            assert crd_schema.errors(doc) == []
            assert sdk_errors(doc) == []
