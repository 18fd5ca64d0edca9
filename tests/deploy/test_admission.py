"""Every overlay gets past the webhooks a stock cluster runs, with only the Knative feature flags the
README names; and the rules catch what they exist for."""

import copy

import pytest

from . import admission, kserve_sim
from .conftest import KNATIVE_FLAGS_NEEDED, OVERLAYS, REPO_ROOT, of_kind, render

README = (REPO_ROOT / "README.md").read_text()


def test_the_readme_states_the_flags_of_every_overlay():
    assert set(KNATIVE_FLAGS_NEEDED) == set(OVERLAYS)
    for flags in KNATIVE_FLAGS_NEEDED.values():
        for flag in flags:
            assert f"{flag}: enabled" in README


@pytest.mark.parametrize("default_mode", ["Knative", "Standard"])
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_is_admitted_with_the_flags_the_readme_names(overlay, default_mode):
    flags = admission.features(**{flag: "enabled" for flag in KNATIVE_FLAGS_NEEDED[overlay]})
    assert [str(d) for d in admission.admit(render(overlay), knative_flags=flags, default_mode=default_mode)] == []


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if KNATIVE_FLAGS_NEEDED[o]])
def test_without_those_flags_knative_refuses_exactly_the_fields_they_allow(overlay):
    denied = admission.admit(render(overlay))
    assert [d.message for d in denied] == [
        "must not set the field(s): spec.template.spec.affinity",
        "must not set the field(s): spec.template.spec.tolerations",
    ]
    assert {d.webhook for d in denied} == {"validation.webhook.serving.knative.dev"}


def _knative_isvc(**predictor):
    isvc = copy.deepcopy(of_kind(render("serverless"), "InferenceService"))
    isvc["spec"]["predictor"].update(predictor)
    return isvc


@pytest.mark.parametrize(
    "predictor, denial",
    [
        (
            {"terminationGracePeriodSeconds": 30},
            "must not set the field(s): spec.template.spec.terminationGracePeriodSeconds",
        ),
        ({"securityContext": {"runAsNonRoot": True}}, "must not set the field(s): spec.template.spec.securityContext"),
        ({"nodeSelector": {"gpu": "true"}}, "must not set the field(s): spec.template.spec.nodeSelector"),
    ],
)
def test_knative_masks_the_pod_fields_kserve_copies_into_its_service(predictor, denial):
    flags = admission.features(**{f: "enabled" for f in KNATIVE_FLAGS_NEEDED["serverless"]})
    objects = [_knative_isvc(**predictor), of_kind(render("serverless"), "ServingRuntime")]
    assert denial in [d.message for d in admission.admit(objects, knative_flags=flags)]


def test_knative_refuses_lifecycle_hooks_and_a_second_port():
    flags = admission.features(**{f: "enabled" for f in KNATIVE_FLAGS_NEEDED["serverless"]})
    objects = render("raw")  # a Standard-mode preStop and the gRPC port, deployed in Knative mode
    of_kind(objects, "InferenceService")["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Knative"
    messages = [d.message for d in admission.admit(objects, knative_flags=flags)]
    assert "must not set the field(s): spec.template.spec.containers[0].lifecycle" in messages
    assert "more than one container port is set: spec.template.spec.containers[*].ports" in messages


@pytest.mark.parametrize(
    "overlay, predictor, message",
    [
        ("serverless", {"scaleMetric": "cpu"}, "[cpu] is not a supported metric"),
        (
            "serverless",
            {"deploymentStrategy": {"type": "Recreate"}},
            "customizing deploymentStrategy is only supported",
        ),
        ("raw", {"scaleMetric": "memory", "scaleTarget": 512}, "the target utilization percentage should be a [1-100]"),
        ("raw", {"minReplicas": 7}, "'MinReplicas' cannot be greater than MaxReplicas"),
        ("raw-keda", {"scaleMetric": "cpu"}, "ScaleMetric is not supported for KEDA"),
    ],
)
def test_kserve_refuses_what_its_autoscaler_class_cannot_do(overlay, predictor, message):
    isvc = of_kind(render(overlay), "InferenceService")
    isvc["spec"]["predictor"].update(predictor)
    assert any(d.message.startswith(message) for d in admission.inference_service(isvc))


def test_the_legacy_mode_name_is_rewritten_and_a_mode_change_is_refused():
    isvc = of_kind(render("serverless"), "InferenceService")
    isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Serverless"
    defaulted = kserve_sim.defaulted(isvc)
    assert defaulted["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    old = {**copy.deepcopy(isvc), "status": {"deploymentMode": "Knative"}}
    isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Standard"
    assert [d.message for d in admission.inference_service(isvc, old=old)][0] == (
        "update rejected: deploymentMode cannot be changed from 'Knative' to 'Standard'"
    )


def test_spec_canary_is_refused_outside_standard_mode_and_with_autoscaling():
    isvc = of_kind(render("serverless"), "InferenceService")
    isvc["spec"]["canary"] = [{"trafficPercent": 10, "predictor": {"name": "v2"}}]
    assert [d.message for d in admission.inference_service(isvc)] == [
        "canary is only supported in Standard deployment mode"
    ]
    isvc = of_kind(render("raw"), "InferenceService")
    isvc["spec"]["canary"] = [{"trafficPercent": 60, "predictor": {"name": "v2", "maxReplicas": 3}}]
    assert [d.message for d in admission.inference_service(isvc)] == [
        'canary "v2" must not set maxReplicas (canary uses fixed replicas)'
    ]


def test_two_instances_in_one_namespace_are_both_admitted():
    a, b = render("raw", name="a"), render("raw", name="b")
    assert admission.admit(b, existing=a) == []
    # With auto-selection, as the runtime had before, the second runtime is refused.
    for objects in (a, b):
        of_kind(objects, "ServingRuntime")["spec"]["supportedModelFormats"][0].update(autoSelect=True, priority=1)
    (denial,) = admission.admit(b, existing=a)
    assert denial.message.startswith("same priority assigned for the model format pytorch-image-classifier")


def test_inference_graph_rules():
    graph = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": {"name": "classify-then-explain"},
        "spec": {
            "nodes": {
                "root": {
                    "routerType": "Splitter",
                    "steps": [{"serviceName": "a", "weight": 70}, {"serviceName": "b", "nodeName": "x", "weight": 20}],
                }
            }
        },
    }
    messages = [d.message for d in admission.admit([graph])]
    assert messages == [
        'Step 1 ("") in node "root" of InferenceGraph "classify-then-explain" specifies more than one of '
        "nodeName, serviceName, serviceUrl",
        "InferenceGraph[classify-then-explain] Node[root] splitter node: the sum of traffic weights for all "
        "routing targets should be 100",
    ]
    graph["spec"] = {"nodes": {"first": {"routerType": "Sequence", "steps": [{"serviceName": "a"}]}}}
    assert [d.rule for d in admission.admit([graph])] == [
        "inference_graph_validation.go: validateInferenceGraphRouterRoot"
    ]


def test_keda_refuses_a_scaled_object_without_triggers_or_with_min_above_max():
    scaled = kserve_sim.scaled_object(kserve_sim.defaulted(of_kind(render("raw-keda"), "InferenceService")))
    assert admission.scaled_object(scaled) == []
    scaled["spec"].update(triggers=[], minReplicaCount=5, maxReplicaCount=2)
    assert [d.message for d in admission.scaled_object(scaled)] == [
        "MinReplicaCount=5 must be less than MaxReplicaCount=2",
        "no triggers defined in the ScaledObject/ScaledJob",
    ]
