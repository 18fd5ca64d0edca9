"""The Ray image (`make image-ray`), run as KubeRay runs the RayService: a head and a worker of the `gpu` group,
each started from its pod template the way KubeRay 1.7 starts it (uid 10001, read-only root, the emptyDirs, the
generated `ray start`; tests/image/_kuberay.py), the model read-only at /mnt/models on the worker, and the
RayService's own Serve config (`predictor.ray.app:build_app`) sent to the head's dashboard as the RayService
controller sends it. The classifier replica runs on the worker, KubeRay's probes pass, and the reference photo
is classified through the worker's `serve` and `serve-grpc` ports."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest

from devtools.payloads import b64
from devtools.photos import CAT_CLASSES, jpeg
from predictor.ray.config import CLASSIFIER_DEPLOYMENT
from predictor.ray.serve_config import APP_IMPORT_PATH

from ._engine import MODEL_MOUNT, Engine, PodSpec, who_writes
from ._kuberay import AGENT_PORT, NODE_HEALTH_PATH, RayCluster, serve_config
from ._lock import RAY_LOCK, locked_versions

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def cluster(engine, ray_image, mounted_model_dir):
    running = RayCluster.start(engine, ray_image, mounted_model_dir)
    try:
        running.deploy(serve_config())
        yield running
    finally:
        running.remove()


@pytest.fixture(scope="module")
def model_name(cluster) -> str:
    app = next(a for a in cluster.config["applications"] if a["import_path"] == APP_IMPORT_PATH)
    return app["args"]["model_name"]


def _assert_cat(class_names) -> None:
    assert CAT_CLASSES & {str(n) for n in class_names[:3]}, class_names


def _layers(engine: Engine, image: str) -> list[str]:
    return json.loads(engine.run("image", "inspect", "--format", "{{json .RootFS.Layers}}", image).stdout)


# ----------------------------------------------------------------------------- what is in it


def test_the_ray_image_is_the_predictor_image_with_another_extras_layer(engine, image, ray_image):
    # Only the last four layers differ: the extras lock, the extras layer, the code and its bytecode. The CUDA
    # and torch layers (most of either image) are the same blobs, stored and pulled once.
    predictor, ray = _layers(engine, image), _layers(engine, ray_image)
    assert len(predictor) == len(ray)
    assert predictor[:-4] == ray[:-4]
    assert all(a != b for a, b in zip(predictor[-4:-2], ray[-4:-2], strict=True))


def test_it_holds_exactly_the_packages_of_the_ray_lock_and_wget_but_no_installer(engine, ray_image):
    pod = PodSpec.from_serving_runtime()
    done = engine.run(
        "run",
        "--rm",
        *pod.flags(engine),
        "--entrypoint",
        "python",
        ray_image,
        "-c",
        "import importlib.metadata as m, json, shutil\n"
        "print(json.dumps({'dists': {d.metadata['Name']: d.version for d in m.distributions()},"
        " 'pip': shutil.which('pip') or shutil.which('pip3'), 'ray': shutil.which('ray'),"
        " 'wget': shutil.which('wget')}))",
    )
    found = json.loads(done.stdout)
    normalised = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found["dists"].items()}
    assert normalised == locked_versions(RAY_LOCK)
    assert found["pip"] is None
    assert found["ray"] == "/opt/venv/bin/ray" and found["wget"]


# ----------------------------------------------------------------------------- how KubeRay runs it


def test_the_worker_runs_as_10001_and_can_write_only_to_its_empty_dirs(cluster):
    pod = PodSpec.from_pod(cluster.worker.group.pod, cluster.worker.group.container)
    assert pod.user == "10001:10001" and pod.read_only_root
    dirs = ["/", "/opt/venv", "/home/predictor", MODEL_MOUNT, "/var/tmp", "/run", "/dev/shm"]
    facts = who_writes(cluster.worker.exec, [*dirs, *sorted(pod.writable_paths)])
    assert (facts["uid"], facts["gid"]) == (10001, 10001)
    # /dev/shm: the object store's emptyDir that KubeRay adds to every Ray pod.
    assert facts["writable"] == sorted([*pod.writable_paths, "/dev/shm"])


def test_kuberays_probes_pass_on_the_head_and_the_worker(cluster):
    for node in (cluster.head, cluster.worker):
        r = httpx.get(node.url(AGENT_PORT) + NODE_HEALTH_PATH, timeout=10)
        assert r.status_code == 200, (node.name, r.text)
    # A RayService worker's readiness is an exec probe: wget and grep against the raylet's agent and Serve's proxy.
    readiness = cluster.worker.exec("bash", "-c", cluster.worker.group.readiness_command())
    assert readiness.returncode == 0, readiness.stdout + readiness.stderr


def test_the_classifier_replica_runs_on_the_worker_not_the_head(cluster):
    (app,) = cluster.applications().values()
    assert app["status"] == "RUNNING"
    replicas = app["deployments"][CLASSIFIER_DEPLOYMENT]["replicas"]
    assert [r["state"] for r in replicas] == ["RUNNING"]
    assert {r["node_ip"] for r in replicas} == {cluster.worker.ip()}


# ----------------------------------------------------------------------------- it classifies


def test_v1_rest_classifies_through_the_workers_serve_port(cluster, model_name):
    serve = cluster.worker.url(cluster.worker.group.port("serve"))
    r = httpx.post(
        f"{serve}/v1/models/{model_name}:predict",
        json={"instances": [{"image": {"b64": b64(jpeg("chelsea"))}}]},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    _assert_cat(r.json()["predictions"][0]["class_names"])


def test_v2_rest_classifies_through_the_workers_serve_port(cluster, model_name):
    serve = cluster.worker.url(cluster.worker.group.port("serve"))
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64(jpeg("chelsea"))]}]}
    r = httpx.post(f"{serve}/v2/models/{model_name}/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    _assert_cat(next(o for o in r.json()["outputs"] if o["name"] == "class_names")["data"])


def test_v2_grpc_classifies_through_the_workers_serve_grpc_port(cluster, model_name):
    async def infer():
        image = InferInput("image", [1], "BYTES")
        image.set_data_from_numpy(np.array([jpeg("chelsea")], dtype=np.object_), binary_data=True)
        client = InferenceGRPCClient(cluster.worker.target(cluster.worker.group.port("serve-grpc")))
        try:
            return await client.infer(InferRequest(model_name=model_name, infer_inputs=[image]))
        finally:
            await client.close()

    names = next(o for o in asyncio.run(infer()).outputs if o.name == "class_names").as_numpy()[0]
    _assert_cat([n.decode() if isinstance(n, bytes) else n for n in names])


def test_bad_input_through_serve_is_a_400_naming_the_problem(cluster, model_name):
    serve = cluster.worker.url(cluster.worker.group.port("serve"))
    r = httpx.post(f"{serve}/v1/models/{model_name}:predict", json={"instances": [{"b64": "not base64!"}]}, timeout=30)
    assert r.status_code == 400
    assert "not valid base64" in r.json()["error"]
