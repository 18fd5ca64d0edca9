"""The transformer overlays: what KServe's controller makes of them starts a transformer that reaches
every predictor, reads the artifact the predictor serves, and drains before the predictor does.

The schema and admission checks of every overlay (these two included) are in test_schemas.py and
test_admission.py; here is what is particular to a transformer.
"""

from __future__ import annotations

import copy

import pytest

from isvctl import manifests
from predictor.transformer.__main__ import build_parser
from predictor.transformer.config import TransformerConfig, check_workers

from . import admission, kserve_sim
from .conftest import KUBECTL, MANIFESTS, of_kind, render

GRACE_PERIOD_S = 20  # --grace_period_s default, the predictor's and the transformer's


def _flag(args: list[str], name: str) -> str:
    """The value of --name in args (either --name=value or --name value); the last one wins."""
    value = None
    for i, arg in enumerate(args):
        if arg == name:
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    assert value is not None, f"{name} not in {args}"
    return value


def _runtime_container(objects: list[dict]) -> dict:
    (container,) = of_kind(objects, "ServingRuntime")["spec"]["containers"]
    return container


def _config(args: list[str]) -> TransformerConfig:
    parsed = build_parser().parse_args(args)
    check_workers(parsed.workers)
    return TransformerConfig.from_args(parsed)


# ----------------------------------------------------------------------------- transformer in its own pods


def test_the_transformer_starts_with_the_args_kserve_gives_it_and_reaches_the_headless_service():
    objects = render("transformer", name="a", namespace="prod")
    isvc = of_kind(objects, "InferenceService")
    container = kserve_sim.transformer_container(isvc)
    assert container["command"] == ["python", "-m", "predictor.transformer"]
    parsed = build_parser().parse_args(container["args"])
    assert parsed.model_name == "a-image-classifier" and parsed.workers == 1
    service = of_kind(objects, "Service")
    assert _config(container["args"]).target == f"dns:///{service['metadata']['name']}:8081"


def test_containerconcurrency_without_a_workers_arg_would_be_refused_so_the_overlay_names_one():
    isvc = of_kind(render("transformer"), "InferenceService")
    isvc["spec"]["transformer"]["containerConcurrency"] = 64
    args = [a for a in isvc["spec"]["transformer"]["containers"][0]["args"] if not a.startswith("--workers")]
    isvc["spec"]["transformer"]["containers"][0]["args"] = args
    injected = kserve_sim.transformer_container(isvc)["args"]
    assert injected[-2:] == ["--workers", "64"]
    with pytest.raises(ValueError, match="put --workers=1"):
        _config(injected)


def test_the_headless_service_selects_every_predictor_pod_on_its_grpc_port():
    objects = render("transformer", name="a", namespace="prod")
    service = of_kind(objects, "Service")
    assert service["spec"]["clusterIP"] == "None"
    isvc = kserve_sim.defaulted(of_kind(objects, "InferenceService"))
    pod_labels = kserve_sim.deployment(isvc, of_kind(objects, "ServingRuntime"))["spec"]["template"]["metadata"]
    assert service["spec"]["selector"].items() <= pod_labels["labels"].items()
    assert service["spec"]["selector"]["component"] == "predictor"
    grpc_port = next(p for p in _runtime_container(objects)["ports"] if p["name"] == "h2c")["containerPort"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [grpc_port]


def test_the_transformer_reads_the_artifact_the_predictor_serves_after_storage_uri_too():
    pins = manifests.Pins({"model": {"storageUri": "s3://models/image-classifier/v7"}})
    for objects in (
        render("transformer"),
        manifests.render(MANIFESTS, manifests.Instance("transformer", "prod", "b"), KUBECTL, pins),
    ):
        isvc = of_kind(objects, "InferenceService")
        (container,) = isvc["spec"]["transformer"]["containers"]
        storage_uri = {e["name"]: e["value"] for e in container["env"]}["STORAGE_URI"]
        assert storage_uri == isvc["spec"]["predictor"]["model"]["storageUri"]
        assert _flag(container["args"], "--model_dir") == "/mnt/models"  # where the storage initializer puts it
    assert storage_uri == "s3://models/image-classifier/v7"


@pytest.mark.parametrize("image", [None, "reg.example.com/p@sha256:" + "b" * 64])
def test_the_transformer_runs_the_runtimes_image(image):
    objects = manifests.render(MANIFESTS, manifests.Instance("transformer", "prod", "", image), KUBECTL)
    (container,) = of_kind(objects, "InferenceService")["spec"]["transformer"]["containers"]
    assert container["image"] == manifests.runtime_image(objects)


@pytest.mark.parametrize("overlay", ["transformer", "transformer-collocated"])
def test_a_channel_for_every_predictor_worker(overlay):
    isvc = of_kind(render(overlay), "InferenceService")
    predictor_args = isvc["spec"]["predictor"]["model"]["args"]
    containers = (
        isvc["spec"]["transformer"]["containers"]
        if overlay == "transformer"
        else isvc["spec"]["predictor"]["containers"]
    )
    # One gRPC connection lands on one worker process: fewer channels would leave workers idle.
    assert int(_flag(containers[0]["args"], "--predictor_channels")) >= int(_flag(predictor_args, "--workers"))


def test_the_network_policy_admits_the_transformers_calls_on_the_grpc_port_only():
    policy = of_kind(render("transformer"), "NetworkPolicy")
    hop_in, hop_out = policy["spec"]["ingress"][-1], policy["spec"]["egress"][-1]
    assert hop_in == {
        "from": [{"podSelector": {"matchLabels": {"component": "transformer"}}}],
        "ports": [{"port": 8081, "protocol": "TCP"}],
    }
    assert hop_out == {
        "to": [{"podSelector": {"matchLabels": {"component": "predictor"}}}],
        "ports": [{"port": 8081, "protocol": "TCP"}],
    }
    # The rules the instance layer rewrites by position are where they were.
    assert policy["spec"]["ingress"][:3] == of_kind(render("gpu"), "NetworkPolicy")["spec"]["ingress"]


def test_the_transformer_drains_after_its_endpoint_leaves():
    transformer = of_kind(render("transformer"), "InferenceService")["spec"]["transformer"]
    (container,) = transformer["containers"]
    pre_stop_s = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert transformer["terminationGracePeriodSeconds"] > pre_stop_s + GRACE_PERIOD_S
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert (requests["cpu"], requests["memory"]) == (limits["cpu"], limits["memory"])  # Guaranteed QoS


# ----------------------------------------------------------------------------- collocated


def _collocated_pod() -> tuple[dict, dict, dict]:
    objects = render("transformer-collocated", name="a", namespace="prod")
    isvc = kserve_sim.defaulted(of_kind(objects, "InferenceService"))
    pod = kserve_sim.pod_spec(isvc, of_kind(objects, "ServingRuntime"))
    predictor, transformer = pod["containers"]
    return pod, predictor, transformer


def test_the_collocated_transformer_is_the_pods_front_door_and_calls_the_predictor_on_localhost():
    pod, predictor, transformer = _collocated_pod()
    assert transformer["name"] == kserve_sim.TRANSFORMER_CONTAINER
    ports = lambda c: {p["containerPort"] for p in c["ports"]}  # noqa: E731
    assert ports(predictor).isdisjoint(ports(transformer))
    # createDefaultSvc (service_reconciler.go) points the Service at the transformer-container's first port.
    config = _config(transformer["args"])
    assert transformer["ports"][0]["containerPort"] == int(_flag(transformer["args"], "--http_port"))
    assert config.target == f"dns:///localhost:{_flag(predictor['args'], '--grpc_port')}"
    assert _flag(transformer["args"], "--model_name") == "a-image-classifier"  # {{.Name}} filled
    assert "env" not in transformer  # the model arrives as the predictor's does


def test_the_collocated_predictor_outlasts_the_transformers_drain():
    pod, predictor, transformer = _collocated_pod()
    transformer_done_s = transformer["lifecycle"]["preStop"]["sleep"]["seconds"] + GRACE_PERIOD_S
    predictor_pre_stop_s = predictor["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert predictor_pre_stop_s >= transformer_done_s
    assert pod["terminationGracePeriodSeconds"] > predictor_pre_stop_s + GRACE_PERIOD_S


def test_the_collocated_transformer_is_reachable_and_scraped():
    objects = render("transformer-collocated")
    _, _, transformer = _collocated_pod()
    gateway = of_kind(objects, "NetworkPolicy")["spec"]["ingress"][1]
    assert {p["containerPort"] for p in transformer["ports"]} <= {p["port"] for p in gateway["ports"]}
    kept = [
        next(r["regex"] for r in e["relabelings"] if r.get("action") == "keep")
        for e in of_kind(objects, "PodMonitor")["spec"]["podMetricsEndpoints"]
    ]
    assert kept == ["8080", str(transformer["ports"][0]["containerPort"])]


def test_kserve_refuses_a_storage_uri_on_a_collocated_transformer():
    isvc = of_kind(render("transformer-collocated"), "InferenceService")
    isvc["spec"]["predictor"]["containers"][0]["env"] = [{"name": "STORAGE_URI", "value": "s3://m/v1"}]
    assert [d.message for d in admission.inference_service(isvc)] == [
        "storage uri should not be specified in transformer container"
    ]


def test_kserve_checks_the_transformers_replicas_and_scaler_like_the_predictors():
    isvc = of_kind(render("transformer"), "InferenceService")
    bad = copy.deepcopy(isvc)
    bad["spec"]["transformer"].update(minReplicas=9, scaleMetric="cpu")
    assert [d.message for d in admission.inference_service(bad)] == [
        "'MinReplicas' cannot be greater than MaxReplicas",
        "ScaleMetric is not supported for KEDA",
    ]
    bad["spec"]["transformer"] = {"minReplicas": 1}
    assert "exactly one of [PodSpec] must be specified in TransformerSpec" in [
        d.message for d in admission.inference_service(bad)
    ]
