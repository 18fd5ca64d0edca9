"""The built image, run as Kubernetes runs it: uid 10001, read-only root, writable emptyDirs only where the
ServingRuntime mounts them, the model read-only at /mnt/models. It classifies the reference photo over every
protocol, passes its own health check, fetches a model over http, and drains on stop."""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import tarfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest

from devtools import metrics
from devtools.launcher import free_port
from devtools.payloads import b64
from devtools.photos import CAT_CLASSES, jpeg

from ._engine import MODEL_MOUNT, Container, Engine, PodSpec, who_writes
from ._lock import locked_versions

# Kubernetes' default terminationGracePeriodSeconds: SIGTERM, then SIGKILL this much later.
GRACE_PERIOD_S = 30


def _start(engine: Engine, image: str, pod: PodSpec, model_dir: Path, name: str, *args: str) -> Container:
    container = Container.start(
        engine,
        image,
        name,
        *pod.flags(engine),
        "--volume",
        f"{model_dir}:{MODEL_MOUNT}:ro",
        ports=(free_port(), free_port()),
        args=("--max_batch_size", "8", *args),
    )
    try:
        container.wait_ready()
    except Exception:
        container.remove()
        raise
    return container


@pytest.fixture(scope="module")
def served(engine, image, pod, mounted_model_dir):
    container = _start(engine, image, pod, mounted_model_dir, "predictor-image-test")
    yield container
    container.remove()


def _assert_cat(class_names) -> None:
    assert CAT_CLASSES & {str(n) for n in class_names[:3]}, class_names


def _in_image(engine: Engine, image: str, pod: PodSpec, code: str, timeout_s: float = 120) -> str:
    """Runs Python in a fresh container of the image, under the pod's restrictions; returns its stdout."""
    done = engine.run(
        "run", "--rm", *pod.flags(engine), "--entrypoint", "python", image, "-c", code, timeout_s=timeout_s
    )
    return done.stdout


# ----------------------------------------------------------------------------- how it runs


def test_runs_as_10001_and_can_write_only_to_the_pods_empty_dirs(served, pod):
    assert pod.user == "10001:10001" and pod.read_only_root
    facts = who_writes(
        served.exec,
        ["/", "/opt/venv", "/home/predictor", "/mnt/models", "/var/tmp", "/run", *sorted(pod.writable_paths)],
    )
    assert (facts["uid"], facts["gid"]) == (10001, 10001)
    assert facts["writable"] == sorted(pod.writable_paths)


def test_the_pods_writable_paths_are_the_images_cache_and_scratch_dirs(served, pod):
    env = dict(line.split("=", 1) for line in served.inspect('{{join .Config.Env "\\n"}}').splitlines())
    for variable in ("XDG_CACHE_HOME", "TORCH_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        assert any(env[variable].startswith(path) for path in pod.writable_paths), (variable, env[variable])
    assert "/tmp" in pod.writable_paths


# ----------------------------------------------------------------------------- it classifies


def test_v1_rest_classifies_the_reference_photo(served):
    r = httpx.post(
        f"{served.http_url}/v1/models/{served.model_name}:predict",
        json={"instances": [{"image": {"b64": b64(jpeg("chelsea"))}}]},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    _assert_cat(r.json()["predictions"][0]["class_names"])


def test_v2_rest_classifies_the_reference_photo(served):
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64(jpeg("chelsea"))]}]}
    r = httpx.post(f"{served.http_url}/v2/models/{served.model_name}/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    names = next(o for o in r.json()["outputs"] if o["name"] == "class_names")
    _assert_cat(names["data"])


def test_v2_grpc_classifies_the_reference_photo(served):
    async def infer():
        image = InferInput("image", [1], "BYTES")
        image.set_data_from_numpy(np.array([jpeg("chelsea")], dtype=np.object_), binary_data=True)
        client = InferenceGRPCClient(served.grpc_target)
        try:
            return await client.infer(InferRequest(model_name=served.model_name, infer_inputs=[image]))
        finally:
            await client.close()

    response = asyncio.run(infer())
    names = next(o for o in response.outputs if o.name == "class_names").as_numpy()[0]
    _assert_cat([n.decode() if isinstance(n, bytes) else n for n in names])


def test_the_images_health_check_passes(served, engine):
    if engine.name == "podman":
        done = engine.run("healthcheck", "run", served.name, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    else:  # docker runs it on its own schedule: wait for the verdict
        deadline = time.monotonic() + 120
        while served.inspect("{{.State.Health.Status}}") == "starting" and time.monotonic() < deadline:
            time.sleep(2)
    assert served.inspect("{{.State.Health.Status}}") == "healthy"


# ----------------------------------------------------------------------------- what is in it


def test_it_holds_exactly_the_locked_packages_and_no_installer(engine, image, pod):
    installed = json.loads(
        _in_image(
            engine,
            image,
            pod,
            "import importlib.metadata as m, json, shutil\n"
            "print(json.dumps({'dists': {d.metadata['Name']: d.version for d in m.distributions()},"
            " 'pip': shutil.which('pip') or shutil.which('pip3')}))",
        )
    )
    normalised = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in installed["dists"].items()}
    assert normalised == locked_versions()
    assert installed["pip"] is None


def test_compile_finds_its_toolchain_under_a_read_only_root(engine, image, pod):
    # --compile builds kernels at run time (inductor's C++ backend here; Triton's launchers on a GPU), with the
    # image's compiler and headers, and caches them in the pod's writable cache dir.
    out = _in_image(
        engine,
        image,
        pod,
        "import torch\nf = torch.compile(lambda x: torch.sin(x) * 2 + 1)\nprint(float(f(torch.zeros(8)).sum()))",
        timeout_s=240,
    )
    assert out.split() == ["8.0"]


# ----------------------------------------------------------------------------- --storage_uri


class _ArchiveHandler(http.server.SimpleHTTPRequestHandler):
    requests_seen: list[str] = []

    def log_message(self, format, *args):
        type(self).requests_seen.append(self.path)


def _archive(model_dir: Path, archive: Path) -> None:
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(model_dir.iterdir()):
                zf.write(path, arcname=path.name)
    else:
        with tarfile.open(archive, "w:gz") as tf:
            for path in sorted(model_dir.iterdir()):
                tf.add(path, arcname=path.name)
    archive.chmod(0o644)


@pytest.mark.parametrize(
    "archive",
    [
        "model.zip",
        "model.tar.gz",
    ],
)
def test_storage_uri_fetches_the_model_over_http_from_loopback(
    engine, image, pod, default_model_dir, tmp_path, archive
):
    _archive(default_model_dir, tmp_path / archive)
    handler = type("Handler", (_ArchiveHandler,), {"requests_seen": []})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **kw: handler(*a, directory=str(tmp_path), **kw)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    http_port, grpc_port = free_port(), free_port()
    # Host networking: the container reaches the loopback server; the predictor binds loopback only. Without
    # a storage initializer, the artifact is fetched into the model dir, a writable emptyDir here.
    try:
        container = Container.start(
            engine,
            image,
            "predictor-image-storage-uri",
            *pod.flags(engine),
            "--tmpfs",
            f"{MODEL_MOUNT}:rw,mode=0777",
            "--network",
            "host",
            ports=(http_port, grpc_port),
            publish=False,
            args=(
                "--storage_uri",
                f"http://127.0.0.1:{server.server_address[1]}/{archive}",
                "--bind_address",
                "127.0.0.1",
                "--http_port",
                str(http_port),
                "--grpc_port",
                str(grpc_port),
            ),
        )
        container.wait_ready()
        assert handler.requests_seen == [f"/{archive}"]
        r = httpx.post(
            f"{container.http_url}/v1/models/classifier:predict",
            json={"instances": [{"b64": b64(jpeg("chelsea"))}]},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        _assert_cat(r.json()["predictions"][0]["class_names"])
    finally:
        engine.run("rm", "--force", "predictor-image-storage-uri", check=False)
        server.shutdown()


# ----------------------------------------------------------------------------- stop


def test_stop_with_requests_in_flight_answers_every_one_and_exits_0(engine, image, pod, mounted_model_dir):
    # A deadline far past the drain: this is about stopping, and a busy CI machine must not turn it into 504s.
    container = _start(
        engine,
        image,
        pod,
        mounted_model_dir,
        "predictor-image-stop",
        "--max_latency_ms",
        "5",
        "--request_timeout_ms",
        "120000",
    )
    n = 32
    url = f"{container.http_url}/v1/models/{container.model_name}:predict"
    body = {"instances": [{"b64": b64(jpeg("chelsea"))}] * 4}

    def inflight(client: httpx.Client) -> float:
        scraped = metrics.parse(client.get(f"{container.http_url}/metrics").text)
        return scraped.get("predictor_inflight_requests", 0.0, model_name=container.model_name) or 0.0

    try:
        with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=n + 4)) as client:
            with ThreadPoolExecutor(n) as pool:
                pending = [pool.submit(client.post, url, json=body) for _ in range(n)]
                # Stop while the server holds at least half of them, as a pod deleted mid-load would be.
                deadline = time.monotonic() + 60
                while (held := inflight(client)) < n // 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert held >= n // 2, f"the server never held {n // 2} requests at once"
                container.stop(GRACE_PERIOD_S)
                responses = [f.result() for f in pending]  # a dropped connection would raise here
        codes = [r.status_code for r in responses]
        # Held requests are answered; any that arrived after SIGTERM are refused with a clean 503.
        assert codes.count(200) >= held and set(codes) <= {200, 503}, codes
        for r in responses:
            if r.status_code == 200:
                _assert_cat(r.json()["predictions"][0]["class_names"])
        assert container.exit_code() == 0, container.logs()
        assert "drained" in container.logs()
    finally:
        container.remove()
