"""Request limits, hostile payloads, overload, disconnects and shutdown, against a real server.

Each test sends X, expects Y, and then the server still answers a reference image correctly.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time

import httpx
import numpy as np
import pytest

from devtools import launcher, triton_grpc
from devtools.payloads import v1_body, v2_binary_tensor, v2_body
from devtools.photos import CAT_CLASSES, blank_png, encode, jpeg, photo

MAX_BODY_BYTES = 300_000


@pytest.fixture(scope="module")
def strict(default_model_dir):
    """A server with a small body cap and a short queue, so limits are cheap to reach."""
    running = launcher.start(
        default_model_dir,
        "--max_body_bytes",
        str(MAX_BODY_BYTES),
        "--max_batch_size",
        "4",
        "--max_latency_ms",
        "2",
        "--max_queue_size",
        "8",
        "--request_timeout_ms",
        "20000",
        "--decode_threads",
        "2",
    )
    yield running
    running.stop()


def _padded_body(total_bytes: int) -> bytes:
    """A valid v1 request of exactly total_bytes (JSON whitespace is padding)."""
    body = json.dumps(v1_body(jpeg("chelsea"), bare=True)).encode()
    assert len(body) <= total_bytes
    return body[:-1] + b" " * (total_bytes - len(body)) + b"}"


# ----------------------------------------------------------------------------- body size


def test_a_body_one_byte_over_the_cap_is_413_and_one_just_under_is_served(strict):
    over = strict.post_v1(_padded_body(MAX_BODY_BYTES + 1), timeout_s=30)
    assert over.status_code == 413, over.text
    assert f"max_body_bytes={MAX_BODY_BYTES}" in over.json()["error"]
    under = strict.post_v1(_padded_body(MAX_BODY_BYTES), timeout_s=30)
    assert under.status_code == 200, under.text
    strict.assert_still_serving()


def test_a_chunked_body_without_content_length_is_cut_off_at_the_cap(strict):
    sent = 0

    def chunks():
        nonlocal sent
        for _ in range(100):  # 6.4 MB offered, far over the cap
            sent += 64_000
            yield b" " * 64_000

    r = httpx.post(strict.v1_url, content=chunks(), headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413, r.text
    assert "max_body_bytes" in r.json()["error"]
    strict.assert_still_serving()


def test_grpc_message_over_the_cap_is_refused(strict):
    big = np.array([b"\xff\xd8\xff" + b"\x00" * (MAX_BODY_BYTES + 10)], dtype=np.object_)
    with pytest.raises(triton_grpc.TritonGrpcError) as info:
        triton_grpc.infer(strict.grpc_url, strict.model_name, [("image", "BYTES", big)])
    assert info.value.status == "StatusCode.RESOURCE_EXHAUSTED", info.value
    strict.assert_still_serving()


# ----------------------------------------------------------------------------- hostile payloads


@pytest.mark.parametrize("path", ["v1", "v2"])
def test_150000_deep_nested_json_is_400(server, path):
    deep = ("[" * 150_000 + "]" * 150_000).encode()
    if path == "v1":
        body = b'{"instances": ' + deep + b"}"
        url = server.v1_url
    else:
        body = b'{"inputs": [{"name": "tensor", "datatype": "FP32", "shape": [1], "data": ' + deep + b"}]}"
        url = server.v2_url
    r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 400, (r.status_code, r.text[:500])
    assert "Traceback" not in r.text
    server.assert_still_serving()


def test_a_20000x20000_png_bomb_of_a_few_kb_is_refused_from_its_header(server):
    bomb = blank_png(20_000, 20_000, bit_depth=1)
    assert len(bomb) < 100_000
    start = time.monotonic()
    r = server.post_v1(v1_body(bomb, bare=True))
    elapsed_s = time.monotonic() - start
    assert r.status_code == 400, r.text
    assert "20000x20000" in r.json()["error"] and "max_image_pixels" in r.json()["error"]
    assert elapsed_s < 5, "the bomb must be refused before decoding"
    server.assert_still_serving()


def _psd() -> bytes:
    # Photoshop header: signature, version 1, 6 reserved, 3 channels, 32x32, 8 bits, RGB mode.
    return b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 32, 32, 8, 3) + b"\x00" * 64


@pytest.mark.parametrize(
    "name, data",
    [
        ("TIFF", encode(photo("chelsea"), "TIFF")),
        ("PSD", _psd()),
        ("GIF", encode(photo("chelsea"), "GIF")),
        ("BMP", encode(photo("chelsea"), "BMP")),
    ],
)
def test_formats_outside_the_allow_list_are_named_and_refused(server, name, data):
    r = server.post_v1(v1_body(data, bare=True))
    assert r.status_code == 400, r.text
    assert f"{name} is not supported" in r.json()["error"]
    assert "JPEG, PNG, WEBP" in r.json()["error"]
    server.assert_still_serving()


def test_a_nan_request_next_to_good_ones_leaves_their_results_identical(server):
    url = server.v2_url
    good = v2_body(jpeg("coffee"))
    nan = np.zeros((1, 3, 224, 224), dtype=np.float32)
    nan[0, 0, 0, 0] = np.nan
    nan_body, nan_headers = v2_binary_tensor("tensor", nan)

    async def together():
        async with httpx.AsyncClient(timeout=60) as client:
            calls = []
            for _ in range(4):
                calls.append(client.post(url, content=nan_body, headers=nan_headers))
                calls.append(client.post(url, json=good))
            return await asyncio.gather(*calls)

    alone = httpx.post(url, json=good, timeout=60).json()
    responses = asyncio.run(together())
    for bad, good_response in zip(responses[0::2], responses[1::2], strict=False):
        assert bad.status_code == 400 and "NaN or Inf" in bad.json()["error"], bad.text
        assert good_response.status_code == 200, good_response.text
        assert_same_prediction(good_response.json(), alone)


def assert_same_prediction(got: dict, alone: dict) -> None:
    """Same classes in the same order; probabilities equal up to float rounding, which differs
    with batch size (the convolution kernels sum in a different order), never more."""
    by_name = lambda body: {o["name"]: o for o in body["outputs"]}  # noqa: E731
    got_outputs, alone_outputs = by_name(got), by_name(alone)
    assert got_outputs["class_names"] == alone_outputs["class_names"]
    assert got_outputs["class_indices"] == alone_outputs["class_indices"]
    np.testing.assert_allclose(
        got_outputs["probabilities"]["data"], alone_outputs["probabilities"]["data"], rtol=1e-4, atol=1e-6
    )


# ----------------------------------------------------------------------------- repository API


def test_clients_cannot_load_or_unload_models(server):
    for verb in ("load", "unload"):
        r = httpx.post(f"{server.base_url}/v2/repository/models/{server.model_name}/{verb}", timeout=10)
        assert r.status_code == 403, r.text
        assert "disabled" in r.json()["error"]
    assert httpx.get(f"{server.base_url}/v2/models/{server.model_name}/ready", timeout=10).status_code == 200
    server.assert_still_serving()


def test_grpc_repository_load_unload_is_permission_denied(server):
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for call, request in (
            (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name=server.model_name)),
            (stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name=server.model_name)),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    server.assert_still_serving()


# ----------------------------------------------------------------------------- overload and disconnects


def test_a_full_queue_answers_503_with_retry_after_at_once_and_no_500s(strict):
    url = strict.v1_url
    body = v1_body(*[jpeg("chelsea")] * 4, bare=True)  # 4 images a request, queue holds 8

    async def flood():
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:

            async def one():
                start = time.monotonic()
                r = await client.post(url, json=body)
                return r, time.monotonic() - start

            return await asyncio.gather(*(one() for _ in range(40)))

    results = asyncio.run(flood())
    codes = [r.status_code for r, _ in results]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(503) > 0 and codes.count(200) > 0, codes
    for r, _elapsed_s in results:
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1
            assert "max_queue_size=8" in r.json()["error"]
    fastest_rejection_s = min(e for r, e in results if r.status_code == 503)
    slowest_success_s = max(e for r, e in results if r.status_code == 200)
    assert fastest_rejection_s < slowest_success_s
    assert strict.metrics().value("predictor_queue_depth") == 0
    strict.assert_still_serving()


def test_clients_that_disconnect_leak_no_queue_slots(strict):
    url = strict.v1_url
    body = v1_body(*[jpeg("coffee")] * 4, bare=True)

    async def impatient():
        async with httpx.AsyncClient(timeout=httpx.Timeout(0.05)) as client:

            async def one():
                try:
                    await client.post(url, json=body)
                except httpx.TimeoutException:
                    pass

            await asyncio.gather(*(one() for _ in range(12)))

    asyncio.run(impatient())

    def held() -> tuple[float, float]:
        m = strict.metrics()
        return m.value("predictor_queue_depth"), m.value("predictor_inflight_requests")

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and held() != (0, 0):
        time.sleep(0.2)
    assert held() == (0, 0)
    # The whole queue is usable again: a request of 8 images (the cap) fits.
    small = encode(photo("chelsea")[::2, ::2], "JPEG")
    r = strict.post_v1(v1_body(*[small] * 8, bare=True))
    assert r.status_code == 200, r.text


def test_an_expired_request_is_504_before_any_device_work(default_model_dir):
    running = launcher.start(
        default_model_dir,
        "--max_batch_size",
        "1",
        "--max_latency_ms",
        "0",
        "--request_timeout_ms",
        "1",
        "--max_concurrent_batches",
        "1",
    )
    try:

        async def burst():
            async with httpx.AsyncClient(timeout=60) as client:
                body = v1_body(jpeg("chelsea"), bare=True)
                return await asyncio.gather(*(client.post(running.v1_url, json=body) for _ in range(8)))

        codes = [r.status_code for r in asyncio.run(burst())]
        assert set(codes) <= {200, 504} and 504 in codes, codes
        assert running.metrics().value("predictor_expired_total") >= codes.count(504)
    finally:
        assert running.stop() == 0


# ----------------------------------------------------------------------------- shutdown


def test_sigterm_with_50_requests_in_flight_answers_all_50_and_exits_0(default_model_dir):
    running = launcher.start(default_model_dir, "--max_batch_size", "8", "--max_latency_ms", "5")
    url = running.v1_url
    body = v1_body(jpeg("chelsea"), bare=True)

    async def scenario():
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as client:
            tasks = [asyncio.create_task(client.post(url, json=body)) for _ in range(50)]
            # Wait until the server holds them, then pull the plug.
            await running.until_inflight(client, 20)
            running.process.send_signal(15)
            signalled = time.monotonic()
            await asyncio.sleep(0.1)
            try:
                ready = (await client.get(f"{running.base_url}/v2/models/{running.model_name}/ready")).status_code
                late = (await client.post(url, json=body)).status_code
            except httpx.TransportError:  # listeners already closed: just as unready
                ready = late = "closed"
            responses = await asyncio.gather(*tasks, return_exceptions=True)
            return responses, signalled, ready, late

    responses, signalled, ready, late = asyncio.run(scenario())
    assert ready in (503, "closed"), ready
    assert late in (503, "closed"), late
    codes = [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in responses]
    assert codes == [200] * 50, codes
    for r in responses:
        assert CAT_CLASSES & set(r.json()["predictions"][0]["class_names"][:3])
    running.process.wait(timeout=30)
    assert running.process.returncode == 0, running.log()[-3000:]
    assert time.monotonic() - signalled < 25, "must exit inside the grace period"
    assert "drained" in running.log()
