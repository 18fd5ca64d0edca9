"""Rendered manifests and recorded documents are valid, strictly, against the real schemas."""

import copy

import kubernetes_validate
import pytest

from .conftest import BUILDS, FIXTURES, crds_dir, recorded
from .strict_schema import KIND_TO_MODEL, crd_errors, sdk_errors

KUBERNETES_VERSION = "1.37.0"
CORE_KINDS = {"ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "ConfigMap"}
# Operator CRDs whose schemas are not vendored here; their shape is asserted in test_render.py.
OTHER_CRDS = {"PodMonitor", "ScaledObject"}
RECORDED = sorted(p.stem for p in FIXTURES.glob("*.yaml"))


@pytest.fixture(scope="module")
def crds():
    path = crds_dir()
    if not (path / "serving.kserve.io_inferenceservices.yaml").is_file():
        pytest.fail(f"KServe CRDs not found in {path}: set KSERVE_CRDS_DIR")
    return path


@pytest.mark.parametrize("build", BUILDS)
def test_every_rendered_object_is_a_kind_we_validate(rendered, build):
    for obj in rendered(build):
        assert obj["kind"] in CORE_KINDS | OTHER_CRDS | set(KIND_TO_MODEL), obj["kind"]


@pytest.mark.parametrize("build", BUILDS)
def test_kserve_objects_match_the_crd_schema_strictly(rendered, crds, build):
    for obj in rendered(build):
        if obj["kind"] in KIND_TO_MODEL:
            assert crd_errors(crds, obj) == [], obj["kind"]


@pytest.mark.parametrize("build", BUILDS)
def test_kserve_objects_match_the_sdk_models_strictly(rendered, build):
    for obj in rendered(build):
        if obj["kind"] in KIND_TO_MODEL:
            assert sdk_errors(obj) == [], obj["kind"]


@pytest.mark.parametrize("build", BUILDS)
def test_core_objects_pass_kubernetes_validate_strict(rendered, build):
    for obj in rendered(build):
        if obj["kind"] in CORE_KINDS:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_documents_are_real_inferenceservices(crds, name):
    doc = recorded(name)
    assert crd_errors(crds, doc) == []
    assert sdk_errors(doc) == []


def test_a_misspelt_field_is_rejected_by_both_validators(rendered, crds):
    (svc,) = [o for o in rendered("overlays/canary") if o["kind"] == "InferenceService"]
    typo = copy.deepcopy(svc)
    typo["spec"]["predictor"]["canaryTrafficPercnt"] = typo["spec"]["predictor"].pop("canaryTrafficPercent")
    assert any("canaryTrafficPercnt" in e for e in crd_errors(crds, typo))
    assert sdk_errors(typo) == ["spec.predictor.canaryTrafficPercnt: unknown field of V1beta1PredictorSpec"]


def test_a_misspelt_container_field_in_the_runtime_is_rejected(rendered, crds):
    (rt,) = [o for o in rendered("runtime") if o["kind"] == "ServingRuntime"]
    rt["spec"]["containers"][0]["readinesProbe"] = rt["spec"]["containers"][0].pop("readinessProbe")
    assert crd_errors(crds, rt) != []
    assert sdk_errors(rt) == ["spec.containers[0].readinesProbe: unknown field of V1Container"]


def test_a_wrong_type_is_rejected(rendered, crds):
    (svc,) = [o for o in rendered("overlays/gpu") if o["kind"] == "InferenceService"]
    svc["spec"]["predictor"]["minReplicas"] = "two"
    assert crd_errors(crds, svc) != []
    assert sdk_errors(svc) == ["spec.predictor.minReplicas: expected int, got 'two'"]


def test_a_misspelt_core_field_is_rejected(rendered):
    (policy,) = [o for o in rendered("base") if o["kind"] == "NetworkPolicy"]
    policy["spec"]["podSelektor"] = policy["spec"].pop("podSelector")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
