"""The predictor on Ray Serve, through both front doors, on a local Ray with two CPU replicas:

- `python -m predictor --ray_replicas 2`: this project's server in front of the replicas;
- the RayService's own Serve config run as `make serve-ray` runs it (`python -m predictor.ray.run`): Serve's
  HTTP and gRPC proxies, the ingress.

Each front door answers v1 and v2 REST and gRPC, refuses bad input with its status and batches in
every replica, and drains on SIGTERM: every request in flight answered, exit 0. Through the server, a killed
replica is replaced while requests keep being answered.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from devtools import launcher
from devtools.payloads import b64
from devtools.photos import CAT_CLASSES, jpeg
from predictor.ray.config import APP_NAME
from predictor.ray.local import app_name as driver_app_name

from ._ray import replica_stats, start_serve_app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "classifier"
REPLICAS = 2
FRONT_DOORS = ("server", "serve_app")


@pytest.fixture(scope="module", params=FRONT_DOORS)
def front_door(request, default_model_dir):
    """(kind, running process, Serve application name); one front door at a time."""
    if request.param == "server":
        running = launcher.start(
            default_model_dir,
            "--ray_replicas",
            str(REPLICAS),
            "--ray_num_cpus",
            "0.5",
            "--max_batch_size",
            "8",
            "--max_latency_ms",
            "20",
            model_name=MODEL,
            ready_timeout_s=300,
        )
        yield request.param, running, driver_app_name(MODEL)
    else:
        running = start_serve_app(default_model_dir, MODEL, max_batch_size=8)
        yield request.param, running, APP_NAME
    # Either way the replicas drain first, then Serve and its Ray instance stop.
    running.stop(timeout_s=60)


def _v1(base_url: str, images: list[bytes], timeout: float = 60) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/models/{MODEL}:predict",
        json={"instances": [{"b64": b64(image)} for image in images]},
        timeout=timeout,
    )


def _grpc_infer(url: str, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    with grpc.insecure_channel(url) as channel:
        return pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)


def _image_request(*images: bytes, name: str = "image") -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=MODEL,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name=name,
                datatype="BYTES",
                shape=[len(images)],
                contents=pb.InferTensorContents(bytes_contents=list(images)),
            )
        ],
    )


def test_v1_rest_classifies_the_reference_photo(front_door):
    _, running, _ = front_door
    r = _v1(running.base_url, [jpeg("chelsea")])
    assert r.status_code == 200, r.text
    assert CAT_CLASSES & set(r.json()["predictions"][0]["class_names"][:3])


def test_v2_rest_classifies_the_reference_photo(front_door):
    _, running, _ = front_door
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64(jpeg("chelsea"))]}]}
    r = httpx.post(f"{running.base_url}/v2/models/{MODEL}/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    names = next(o for o in r.json()["outputs"] if o["name"] == "class_names")["data"]
    assert CAT_CLASSES & set(names[:3])


def test_grpc_classifies_the_reference_photo_with_request_parameters(front_door):
    _, running, _ = front_door
    request = _image_request(jpeg("chelsea"), jpeg("chelsea"))
    # A parameter map is what KServe's RayModel cannot pickle: here the replicas never see it.
    request.parameters["top_k"].int64_param = 3
    response = _grpc_infer(running.grpc_url, request)
    names = next(o for o in response.outputs if o.name == "class_names")
    assert list(names.shape) == [2, 3]
    assert CAT_CLASSES & {n.decode() for n in names.contents.bytes_contents[:3]}


def test_grpc_model_metadata_and_readiness(front_door):
    _, running, _ = front_door
    with grpc.insecure_channel(running.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=30).live
        assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=30).ready
        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=30)
    assert [i.name for i in metadata.inputs] == ["image", "pixels", "tensor"]


def test_bad_input_is_a_400_naming_the_problem_and_nothing_breaks(front_door):
    _, running, _ = front_door
    r = httpx.post(
        f"{running.base_url}/v1/models/{MODEL}:predict", json={"instances": [{"b64": "not base64!"}]}, timeout=30
    )
    assert r.status_code == 400
    assert "not valid base64" in r.json()["error"]
    r = httpx.post(f"{running.base_url}/v1/models/{MODEL}:predict", json={"instances": [{"b64": b64(b"GIF89a")}]})
    assert r.status_code == 400, r.text
    with pytest.raises(grpc.RpcError) as raised:
        _grpc_infer(running.grpc_url, _image_request(b"x", name="nope"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A BYTES input is the image whatever its name: these bytes are not one.
    assert "image format not recognised" in raised.value.details()
    assert "Traceback" not in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        _grpc_infer(running.grpc_url, pb.ModelInferRequest(model_name="missing"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Traceback" not in raised.value.details()
    assert _v1(running.base_url, [jpeg("chelsea")]).status_code == 200


def test_batches_larger_than_one_form_in_each_replica(front_door):
    _, running, app = front_door
    photo = jpeg("chelsea")
    # Rounds of 32 concurrent one-image requests: each replica gets ~16 within its 20 ms window.
    with ThreadPoolExecutor(32) as pool:
        for _ in range(3):
            statuses = list(pool.map(lambda _: _v1(running.base_url, [photo]).status_code, range(32)))
            assert set(statuses) == {200}
    stats = replica_stats(running.process.pid, app, REPLICAS)
    assert len(stats) == REPLICAS
    for replica in stats:
        assert replica["batches_over_one"] >= 1, replica
        assert replica["images"] > replica["batches"], replica


def test_a_killed_replica_is_restarted_and_requests_keep_being_answered(front_door):
    kind, running, app = front_door
    if kind != "server":
        # Both front doors reach the replicas through the same RemoteClassifier; one restart is enough.
        pytest.skip("tested through the server")
    before = replica_stats(running.process.pid, app, REPLICAS)
    victim = before[0]
    statuses: list[tuple[int, str | None]] = []
    stop = threading.Event()
    photo = jpeg("chelsea")

    def load() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                r = client.post(
                    f"{running.base_url}/v1/models/{MODEL}:predict", json={"instances": [{"b64": b64(photo)}]}
                )
                statuses.append((r.status_code, r.headers.get("retry-after")))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    os.kill(victim["pid"], signal.SIGKILL)
    # Serve notices the dead actor and starts a replacement (loading the model takes a while).
    deadline = time.monotonic() + 240
    replaced = False
    while time.monotonic() < deadline and not replaced:
        time.sleep(5)
        ids = {s["replica_id"] for s in replica_stats(running.process.pid, app, REPLICAS)}
        replaced = victim["replica_id"] not in ids and len(ids) == REPLICAS
    stop.set()
    for t in threads:
        t.join(60)
    assert replaced, "Serve did not replace the killed replica"
    codes = {code for code, _ in statuses}
    assert codes <= {200, 503}, statuses
    assert all(retry for code, retry in statuses if code == 503)
    assert statuses.count((200, None)) > 10
    assert _v1(running.base_url, [photo]).status_code == 200


def test_sigterm_drains_the_requests_in_flight(front_door):
    kind, running, _ = front_door
    photo = jpeg("chelsea")
    sent = threading.Semaphore(0)

    def request() -> httpx.Response:
        with httpx.Client(event_hooks={"request": [lambda _: sent.release()]}) as client:
            body = {"instances": [{"b64": b64(photo)}] * 4}
            return client.post(f"{running.base_url}/v1/models/{MODEL}:predict", json=body, timeout=60)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(request) for _ in range(8)]
        for _ in futures:
            assert sent.acquire(timeout=30)
        if kind == "server":
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and running.metrics().value("predictor_inflight_requests") == 0:
                time.sleep(0.02)
        else:
            time.sleep(0.2)  # past Serve's proxy, which has no in-flight gauge of its own to wait on
        running.process.send_signal(signal.SIGTERM)
        responses = [f.result() for f in futures]
    assert running.process.wait(90) == 0, running.log()[-3000:]
    # Accepted before SIGTERM: answered. After it: refused as not ready (503), never a 500.
    assert {r.status_code for r in responses} <= {200, 503}, [r.text for r in responses]
    assert any(r.status_code == 200 for r in responses)
