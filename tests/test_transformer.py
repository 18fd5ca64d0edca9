"""The transformer in front of the predictor: two real processes on loopback, real clients.

Through the hop a client gets what it would get from the predictor directly, concurrent requests
reach the predictor as multi-image calls, the predictor's statuses come back as the client's
(400 with its message, 503 with Retry-After, 504 at the request's deadline), and a predictor
that is killed or drained never turns into a 500.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from kserve import InferenceGRPCClient

from devtools import launcher, triton_grpc
from devtools.artifacts import make_small_artifact
from devtools.payloads import (
    infer_request,
    infer_response_predictions,
    v1_body,
    v2_binary_tensor,
    v2_body,
)
from devtools.photos import CAT_CLASSES, encode, jpeg, photo
from devtools.tls import self_signed
from predictor.transformer.config import TransformerConfig

TRANSFORMER = "predictor.transformer"
PHOTOS = [jpeg("chelsea"), encode(photo("coffee"), "PNG"), encode(photo("astronaut"), "WEBP")]


@pytest.fixture(scope="module")
def predictor(default_model_dir):
    running = launcher.start(default_model_dir, "--device", "cpu", "--max_batch_size", "16", "--max_latency_ms", "5")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def transformer(default_model_dir, predictor):
    # 50 ms for companions: concurrent test clients on a busy machine still share calls.
    running = launcher.start_transformer(default_model_dir, predictor, "--max_latency_ms", "50")
    yield running
    running.stop()


def assert_same(got: list[dict], direct: list[dict]) -> None:
    """Same classes in the same order; probabilities equal up to float rounding, which differs with
    batch composition (the convolutions sum in another order), never more."""
    assert len(got) == len(direct)
    for g, d in zip(got, direct, strict=True):
        assert g["class_names"] == d["class_names"]
        assert list(g["class_indices"]) == list(d["class_indices"])
        np.testing.assert_allclose(g["probabilities"], d["probabilities"], rtol=1e-4, atol=1e-6)


def _v2_rows(body: dict) -> list[dict]:
    outputs = {o["name"]: o for o in body["outputs"]}
    n, k = outputs["class_names"]["shape"]
    return [{name: outputs[name]["data"][i * k : (i + 1) * k] for name in outputs} for i in range(n)]


# ----------------------------------------------------------------------------- same answers


def test_v1_through_the_transformer_equals_the_direct_call(predictor, transformer):
    body = v1_body(*PHOTOS, top_k=3)
    direct, hop = predictor.post_v1(body), transformer.post_v1(body)
    assert direct.status_code == hop.status_code == 200, hop.text
    assert_same(hop.json()["predictions"], direct.json()["predictions"])
    assert CAT_CLASSES & set(hop.json()["predictions"][0]["class_names"])


def test_v2_rest_json_and_binary_through_the_transformer_equal_the_direct_call(predictor, transformer):
    body = v2_body(*PHOTOS)
    direct, hop = predictor.post_v2(body), transformer.post_v2(body)
    assert hop.status_code == 200, hop.text
    assert_same(_v2_rows(hop.json()), _v2_rows(direct.json()))

    def binary(server) -> dict[str, np.ndarray]:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        inp = httpclient.InferInput("image", [len(PHOTOS)], "BYTES")
        inp.set_data_from_numpy(np.array(PHOTOS, dtype=np.object_), binary_data=True)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("probabilities", "class_indices")]
        result = client.infer(server.model_name, [inp], outputs=outputs)
        return {n: result.as_numpy(n) for n in ("probabilities", "class_indices")}

    direct_binary, hop_binary = binary(predictor), binary(transformer)
    np.testing.assert_array_equal(hop_binary["class_indices"], direct_binary["class_indices"])
    np.testing.assert_allclose(hop_binary["probabilities"], direct_binary["probabilities"], rtol=1e-4, atol=1e-6)


def test_grpc_through_the_transformer_equals_the_direct_call(predictor, transformer):
    async def both() -> tuple[list[dict], list[dict]]:
        answers = []
        for server in (predictor, transformer):
            client = InferenceGRPCClient(server.grpc_url, timeout=60)
            try:
                response = await client.infer(infer_request(server.model_name, *PHOTOS, top_k=4))
            finally:
                await client.close()
            answers.append(infer_response_predictions(response))
        return answers[0], answers[1]

    direct, hop = asyncio.run(both())
    assert_same(hop, direct)


def test_pixels_and_preprocessed_tensors_pass_through_the_hop(predictor, transformer, spec):
    from predictor.preprocess import EvalTransform

    pixels = photo("chelsea")[None]
    direct = triton_grpc.infer(predictor.grpc_url, predictor.model_name, [("pixels", "UINT8", pixels)])
    hop = triton_grpc.infer(transformer.grpc_url, transformer.model_name, [("pixels", "UINT8", pixels)])
    np.testing.assert_array_equal(hop["class_indices"], direct["class_indices"])
    import torch

    tensor = EvalTransform.from_spec(spec)(torch.from_numpy(photo("coffee")).permute(2, 0, 1).contiguous())
    body, headers = v2_binary_tensor("tensor", tensor[None].numpy())
    direct, hop = predictor.post_v2(body, headers), transformer.post_v2(body, headers)
    assert hop.status_code == 200, hop.text
    assert_same(_v2_rows(hop.json()), _v2_rows(direct.json()))


def test_the_transformer_advertises_the_predictors_inputs_and_outputs(predictor, transformer):
    def meta(server) -> dict:
        return httpx.get(f"{server.base_url}/v2/models/{server.model_name}", timeout=10).json()

    assert meta(transformer)["inputs"] == meta(predictor)["inputs"]
    assert meta(transformer)["outputs"] == meta(predictor)["outputs"]


def test_the_transformer_serves_tritons_model_configuration_of_its_queue(transformer):
    r = httpx.get(f"{transformer.base_url}/v2/models/{transformer.model_name}/config", timeout=10)
    assert r.status_code == 200, r.text
    config = r.json()
    assert config["name"] == transformer.model_name
    assert config["parameters"]["role"] == {"string_value": "transformer"}
    assert [i["name"] for i in config["input"]] == ["image", "pixels", "tensor"]


def test_the_transformers_statistics_count_its_own_requests_calls_and_stages(transformer):
    def stats() -> dict:
        r = httpx.get(f"{transformer.base_url}/v2/models/{transformer.model_name}/stats", timeout=10)
        assert r.status_code == 200, r.text
        (model,) = r.json()["model_stats"]
        return model

    before = stats()
    r = httpx.post(transformer.v1_url, json=v1_body(jpeg("chelsea"), jpeg("coffee")), timeout=60)
    assert r.status_code == 200, r.text
    after = stats()

    def delta(*path: str) -> int:
        old, new = before, after
        for key in path:
            old, new = old[key], new[key]
        return int(new - old)

    assert delta("inference_stats", "success", "count") == 1
    assert delta("inference_count") == 2, "both images went to the predictor"
    assert delta("execution_count") >= 1, "in one or more predictor calls"
    assert delta("inference_stats", "compute_input", "ns") > 0, "decode and crop are the input stage"
    assert delta("inference_stats", "compute_infer", "count") == delta("execution_count")
    assert after["inference_stats"]["compute_output"] == {"count": 0, "ns": 0}


# ----------------------------------------------------------------------------- coalescing


def test_concurrent_requests_reach_the_predictor_as_multi_image_calls(predictor, transformer):
    clients = 16

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as client:
            body = v1_body(jpeg("chelsea"), bare=True)
            return await asyncio.gather(*(client.post(transformer.v1_url, json=body) for _ in range(clients)))

    before = predictor.metrics()
    responses = asyncio.run(burst())
    window = predictor.metrics() - before
    assert [r.status_code for r in responses] == [200] * clients
    calls = window.value("predictor_requests_total", status="ok")
    images = window.value("predictor_batch_size_sum")
    assert images == clients, "every image reached the predictor once"
    assert calls < clients, f"{clients} client requests made {calls:g} predictor calls: none were coalesced"
    hop = transformer.metrics()
    assert hop.value("transformer_batch_size_sum") >= clients
    assert hop.get("predictor_requests_total", status="ok") is None, "the transformer reports under its own names"
    assert hop.value("transformer_requests_total", model_name=transformer.model_name, status="ok") >= clients
    assert hop.value("transformer_batch_size_count", model_name=transformer.model_name) >= 1


# ----------------------------------------------------------------------------- statuses across the hop

STRICT_PIXELS = 4000  # below the small model's 64 x 64 crop: the predictor refuses what the transformer sends


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("small")
    make_small_artifact(directory)
    return directory


@pytest.fixture(scope="module")
def strict_predictor(small_model_dir):
    """Holds a lone image up to 2 s for companions, queues at most 64, refuses images over 4000 px."""
    running = launcher.start(
        small_model_dir,
        "--device",
        "cpu",
        "--max_batch_size",
        "64",
        "--max_queue_size",
        "64",
        "--max_latency_ms",
        "2000",
        "--max_image_pixels",
        str(STRICT_PIXELS),
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def hurried_transformer(small_model_dir, strict_predictor):
    running = launcher.start_transformer(small_model_dir, strict_predictor, "--request_timeout_ms", "500")
    yield running
    running.stop()


def _tensors(count: int, crop_px: int = 64) -> tuple[bytes, dict[str, str]]:
    return v2_binary_tensor("tensor", np.zeros((count, 3, crop_px, crop_px), dtype=np.float32))


def test_a_predictor_refusal_is_400_with_the_predictors_message(hurried_transformer):
    r = hurried_transformer.post_v1(v1_body(jpeg("chelsea"), bare=True))
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("predictor: ")
    assert f"more than the limit of {STRICT_PIXELS} pixels (max_image_pixels)" in r.json()["error"]


def test_a_full_predictor_queue_is_503_with_retry_after(strict_predictor, hurried_transformer):
    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            # 40 images wait in the predictor's queue for companions; 32 more do not fit in 64.
            small = encode(photo("chelsea", (40, 30)), "PNG")
            filler = asyncio.create_task(client.post(strict_predictor.v1_url, json=v1_body(*[small] * 40, bare=True)))
            await strict_predictor.until_inflight(client, 40, gauge="predictor_queue_depth")
            body, headers = _tensors(32)
            refused = await client.post(hurried_transformer.v2_url, content=body, headers=headers)
            return refused, await filler

    refused, filler = asyncio.run(scenario())
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert "predictor unavailable" in refused.json()["error"] and "queue full" in refused.json()["error"]
    assert filler.status_code == 200, filler.text


def test_the_remaining_deadline_is_the_predictor_calls_timeout(strict_predictor, hurried_transformer):
    body, headers = _tensors(1)
    started = time.monotonic()
    r = hurried_transformer.post_v2(body, headers)
    elapsed_s = time.monotonic() - started
    assert r.status_code == 504, r.text
    assert "did not answer within the request's remaining" in r.json()["error"]
    # The predictor would have held the image 2 s; the call gave up at the request's 500 ms.
    assert elapsed_s < 1.5, elapsed_s
    # The predictor saw the cancellation and let the image go: nothing stays queued for nobody.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and strict_predictor.metrics().value("predictor_queue_depth") != 0:
        time.sleep(0.1)
    assert strict_predictor.metrics().value("predictor_queue_depth") == 0


def test_bad_input_is_the_transformers_own_400_and_it_keeps_serving(transformer, predictor):
    before = predictor.metrics().value("predictor_request_seconds_count")
    r = transformer.post_v1(v1_body(encode(photo("chelsea"), "TIFF"), bare=True))
    assert r.status_code == 400 and "TIFF is not supported" in r.json()["error"], r.text
    r = transformer.post_v1({"instances": "nope"})
    assert r.status_code == 400 and '"instances" must be a list' in r.json()["error"], r.text
    assert predictor.metrics().value("predictor_request_seconds_count") == before, "refused before the hop"
    transformer.assert_still_serving()


def test_a_predictor_serving_another_artifact_is_a_502_not_wrong_names(small_model_dir, tmp_path):
    other = tmp_path / "relabelled"
    make_small_artifact(other, labels=[f"other_{i}" for i in range(10)])
    predictor = launcher.start(other, "--device", "cpu")
    transformer = launcher.start_transformer(small_model_dir, predictor)
    try:
        r = transformer.post_v1(v1_body(jpeg("chelsea")))
        assert r.status_code == 502, r.text
        assert "serve different artifacts; deploy both from one storageUri" in r.json()["error"]
    finally:
        assert transformer.stop() == 0
        predictor.stop()


# ----------------------------------------------------------------------------- a predictor that goes away


def _restart(predictor: launcher.RunningServer, model_dir) -> launcher.RunningServer:
    """The same predictor again, on the same ports."""
    return launcher.start(model_dir, "--device", "cpu", http_port=predictor.http_port, grpc_port=predictor.grpc_port)


def test_a_killed_predictor_is_503_with_retry_after_until_it_is_back(small_model_dir):
    predictor = launcher.start(small_model_dir, "--device", "cpu")
    transformer = launcher.start_transformer(small_model_dir, predictor)
    replacement = None
    try:
        body = v1_body(jpeg("chelsea"))
        assert transformer.post_v1(body).status_code == 200
        predictor.process.send_signal(signal.SIGKILL)
        predictor.process.wait()
        for _ in range(3):
            r = transformer.post_v1(body)
            assert r.status_code == 503, r.text
            assert int(r.headers["retry-after"]) >= 1
            assert "predictor unavailable" in r.json()["error"]
        replacement = _restart(predictor, small_model_dir)
        deadline = time.monotonic() + 30
        while (r := transformer.post_v1(body)).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert r.status_code == 200, r.text
        assert transformer.process.poll() is None
    finally:
        assert transformer.stop() == 0
        if replacement is not None:
            replacement.stop()


def test_the_transformer_serves_tls_with_kserves_flags(predictor, default_model_dir, tmp_path):
    cert, key = self_signed(tmp_path)
    transformer = launcher.start_transformer(
        default_model_dir, predictor, "--ssl_certfile", str(cert), "--ssl_keyfile", str(key), ca_file=str(cert)
    )
    try:
        body = v1_body(jpeg("chelsea"))
        r = httpx.post(transformer.v1_url, json=body, timeout=60, verify=transformer.verify())
        assert r.status_code == 200, r.text
        assert_same(r.json()["predictions"], predictor.post_v1(body).json()["predictions"])
    finally:
        assert transformer.stop() == 0


# ----------------------------------------------------------------------------- draining


async def _in_flight(server: launcher.RunningServer, client: httpx.AsyncClient, count: int) -> list[asyncio.Task]:
    body = v1_body(jpeg("chelsea"))
    return [asyncio.create_task(client.post(server.v1_url, json=body)) for _ in range(count)]


def test_sigterm_to_the_transformer_answers_everything_it_accepted_and_exits_0(small_model_dir):
    # The predictor holds every lone image 300 ms: requests stay in flight long enough to signal.
    predictor = launcher.start(small_model_dir, "--device", "cpu", "--max_latency_ms", "300", "--max_batch_size", "64")
    transformer = launcher.start_transformer(small_model_dir, predictor, "--max_batch_size", "4")
    try:

        async def scenario() -> tuple[list, object]:
            async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
                tasks = await _in_flight(transformer, client, 24)
                await transformer.until_inflight(client, 24, gauge="transformer_inflight_requests")
                transformer.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.1)
                try:
                    late = (await client.post(transformer.v1_url, json=v1_body(jpeg("chelsea")))).status_code
                except httpx.TransportError:
                    late = "closed"
                return await asyncio.gather(*tasks, return_exceptions=True), late

        responses, late = asyncio.run(scenario())
        codes = [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in responses]
        assert codes == [200] * 24, codes
        assert late in (503, "closed"), late
        assert transformer.wait_exit(30) == 0, transformer.log()[-3000:]
        assert "drained" in transformer.log()
    finally:
        transformer.stop()
        assert predictor.stop() == 0


def test_sigterm_to_the_predictor_finishes_the_calls_in_flight_then_503(small_model_dir):
    predictor = launcher.start(small_model_dir, "--device", "cpu", "--max_latency_ms", "300", "--max_batch_size", "64")
    transformer = launcher.start_transformer(small_model_dir, predictor, "--max_batch_size", "4")
    try:

        async def scenario() -> tuple[list, httpx.Response]:
            async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
                tasks = await _in_flight(transformer, client, 12)
                await predictor.until_inflight(client, 3)  # 12 images in calls of 4
                predictor.process.send_signal(signal.SIGTERM)
                responses = await asyncio.gather(*tasks, return_exceptions=True)
                assert predictor.wait_exit(30) == 0, predictor.log()[-3000:]
                return responses, await client.post(transformer.v1_url, json=v1_body(jpeg("chelsea")))

        responses, after = asyncio.run(scenario())
        codes = [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in responses]
        assert codes == [200] * 12, codes
        assert after.status_code == 503, after.text
        assert int(after.headers["retry-after"]) >= 1
        assert "drained" in predictor.log()
    finally:
        assert transformer.stop() == 0
        predictor.stop()


# ----------------------------------------------------------------------------- flags


def _run_transformer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", TRANSFORMER, *args], capture_output=True, text=True, timeout=120, env=os.environ
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "100000"], "KServe adds --workers <containerConcurrency>"),
        (["--predictor_protocol", "v1"], "use --predictor_protocol grpc-v2"),
        ([], "--predictor_host is required"),
        (["--ssl_certfile", "/nonexistent/tls.crt"], "--ssl_certfile is set but --ssl_keyfile is not"),
        (["--grpc_max_receive_message_length", "-1"], "is more than --max_body_bytes"),
    ],
)
def test_flags_the_controller_may_inject_are_refused_with_a_message_that_says_what_to_do(
    small_model_dir, args, message
):
    host = [] if not args else ["--predictor_host", "127.0.0.1:1"]
    done = _run_transformer("--model_dir", str(small_model_dir), *host, *args)
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two workers need two CPUs")
def test_workers_that_fit_the_cpus_run_whole_transformers_on_shared_ports(small_model_dir):
    predictor = launcher.start(small_model_dir, "--device", "cpu")
    transformer = launcher.start_transformer(small_model_dir, predictor, "--workers", "2")
    try:
        for _ in range(4):
            assert transformer.post_v1(v1_body(jpeg("chelsea"))).status_code == 200
    finally:
        assert transformer.stop() == 0
        predictor.stop()


@pytest.mark.parametrize(
    "host, target",
    [
        ("image-classifier-predictor.ml-serving", "dns:///image-classifier-predictor.ml-serving:8081"),
        ("image-classifier-predictor-grpc.ml-serving:8081", "dns:///image-classifier-predictor-grpc.ml-serving:8081"),
        ("localhost:8086", "dns:///localhost:8086"),
        ("::1", "dns:///[::1]:8081"),
        ("dns:///already:9000", "dns:///already:9000"),
    ],
)
def test_the_injected_predictor_host_without_a_port_goes_to_the_grpc_port(host, target):
    assert TransformerConfig(predictor_host=host).target == target
