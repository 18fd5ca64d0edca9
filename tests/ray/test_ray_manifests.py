"""The RayService and its Serve config: valid against KubeRay's CRD and Ray's schema, strictly,
and placed like the GPU overlay. No cluster: the manifests are rendered with kustomize."""

from __future__ import annotations

import copy
import functools
import subprocess
from pathlib import Path

import pytest
import yaml

from predictor.batching import BatchingConfig
from predictor.ray.config import RayConfig, max_ongoing_requests, replica_options
from predictor.ray.serve_config import ServeConfigError, check, localize, serve_configs_of

from ..deploy import crd_schema
from ..deploy.conftest import kustomize

REPO = Path(__file__).resolve().parents[2]
KUBECTL = REPO / ".venv" / "bin" / "kubectl"


@functools.cache
def rendered() -> tuple[dict, ...]:
    return tuple(kustomize(REPO / "inferenceservices" / "ray"))


def rayservice() -> dict:
    (svc,) = [o for o in rendered() if o["kind"] == "RayService"]
    return copy.deepcopy(svc)


def crd_errors(obj: dict) -> list[str]:
    return crd_schema.errors(obj)


def test_only_the_rayservice_is_rendered_and_it_matches_the_kuberay_crd_strictly():
    assert [o["kind"] for o in rendered()] == ["RayService"]
    assert crd_errors(rayservice()) == []


def test_a_misspelt_rayservice_field_is_rejected():
    svc = rayservice()
    svc["spec"]["upgradeStrategy"]["typ"] = svc["spec"]["upgradeStrategy"].pop("type")
    assert any("typ" in e for e in crd_errors(svc))


def test_serve_config_v2_is_the_serve_config_file_and_passes_the_strict_check():
    ((name, config),) = serve_configs_of([rayservice()])
    assert config == yaml.safe_load((REPO / "inferenceservices" / "ray" / "serve-config.yaml").read_text())
    check(config, source=name)


@pytest.mark.parametrize(
    ("path", "typo"),
    [
        (("applications", 0, "deployments", 0), "num_replica"),
        (("grpc_options",), "grpc_servicer_function"),
        (("applications", 0, "args"), "max_batchsize"),
    ],
)
def test_a_misspelt_serve_config_key_is_rejected(path, typo):
    ((_, config),) = serve_configs_of([rayservice()])
    node = config
    for key in path:
        node = node[key]
    node[typo] = 1
    with pytest.raises(ServeConfigError, match=typo):
        check(config)


def test_the_gpu_workers_follow_the_gpu_overlay_scheduling_rules():
    overlay = yaml.safe_load(
        (REPO / "inferenceservices" / "components" / "gpu" / "inferenceservice-gpu.yaml").read_text()
    )
    rules = overlay["spec"]["predictor"]
    (group,) = rayservice()["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    pod = group["template"]["spec"]
    assert pod["affinity"] == rules["affinity"]
    assert pod["tolerations"] == rules["tolerations"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["envFrom"] == [{"secretRef": {"name": "image-classifier-storage"}}]


def test_the_head_exposes_the_serve_ports_kuberay_puts_on_the_serve_service():
    head = rayservice()["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in head["ports"]}
    ((_, config),) = serve_configs_of([rayservice()])
    assert ports["serve"] == config["http_options"]["port"]
    assert ports["serve-grpc"] == config["grpc_options"]["port"]


def test_the_local_config_keeps_the_application_and_moves_it_to_loopback(tmp_path):
    ((_, config),) = serve_configs_of([rayservice()])
    local = localize(config, model_dir=str(tmp_path), http_port=18000, grpc_port=19000)
    check(local)
    assert local["http_options"]["host"] == "127.0.0.1"
    assert local["applications"][0]["import_path"] == config["applications"][0]["import_path"]
    assert local["applications"][0]["args"]["model_dir"] == str(tmp_path)


def test_max_ongoing_requests_lets_each_replica_fill_its_batches():
    batching = BatchingConfig(max_batch_size=32, max_concurrent_batches=2, max_queue_size=1024)
    assert max_ongoing_requests(batching) == 96  # a batch forming while two are in flight
    small_queue = BatchingConfig(max_batch_size=32, max_concurrent_batches=2, max_queue_size=40)
    assert max_ongoing_requests(small_queue) == 40
    options = replica_options(batching, num_gpus=0.5, num_cpus=2)
    assert options["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 0.5}
    assert options["max_queued_requests"] == 1024


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ray_replicas": -1}, "ray_replicas"),
        ({"ray_num_gpus": 1.5}, "ray_num_gpus"),
        ({"ray_num_gpus": -0.5}, "ray_num_gpus"),
        ({"ray_num_cpus": 0}, "ray_num_cpus"),
    ],
)
def test_bad_ray_settings_are_refused_with_their_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RayConfig(**kwargs)


def test_deploy_ray_dry_run_prints_the_checked_manifest_and_applies_nothing():
    done = subprocess.run(
        [
            "make",
            "--silent",  # stdout is the manifest alone, even when a prerequisite has to be installed first
            "--no-print-directory",
            "deploy-ray",
            "DRY_RUN=1",
            "NAMESPACE=team-a",
            "STORAGE_URI=s3://b/m2",
            "KUBECTL=" + str(KUBECTL),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    documents = [d for d in yaml.safe_load_all(done.stdout) if d]
    ((_, config),) = serve_configs_of(documents)
    assert documents[0]["metadata"]["namespace"] == "team-a"
    assert config["applications"][0]["args"]["storage_uri"] == "s3://b/m2"
    assert "# DRY_RUN: would run: kubectl apply --server-side" in done.stdout
