"""Every protocol path, through the real server, with real photos and real clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest

from devtools import triton_grpc
from devtools.payloads import b64, infer_request, infer_response_predictions, v1_body, v2_body
from devtools.photos import CAT_CLASSES, COFFEE_CLASSES, encode, jpeg, photo
from predictor.preprocess import EvalTransform


def _names(row) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else x for x in row]


def _assert_cat(names) -> None:
    assert CAT_CLASSES & set(list(names)[:3]), names


def _assert_coffee(names) -> None:
    assert COFFEE_CLASSES & set(list(names)[:3]), names


# ----------------------------------------------------------------------------- v1


def test_v1_base64_images_of_different_sizes_in_one_request(server):
    body = {
        "instances": [
            {"image": {"b64": b64(jpeg("chelsea"))}},  # 451x300 JPEG
            {"b64": b64(encode(photo("coffee"), "PNG"))},  # 600x400 PNG, TF-Serving's bare form
            {"image": {"b64": b64(encode(photo("chelsea"), "WEBP"))}},
        ]
    }
    r = server.post_v1(body)
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert len(predictions) == 3
    _assert_cat(predictions[0]["class_names"])
    _assert_coffee(predictions[1]["class_names"])
    _assert_cat(predictions[2]["class_names"])
    first = predictions[0]
    assert len(first["class_names"]) == len(first["class_indices"]) == len(first["probabilities"]) == 5
    assert first["probabilities"] == sorted(first["probabilities"], reverse=True)
    assert 0 < sum(first["probabilities"]) <= 1.0001


def test_v1_preprocessed_tensor_matches_the_image_path(server, spec):
    tensor = EvalTransform.from_spec(spec)(torch.from_numpy(photo("chelsea")).permute(2, 0, 1).contiguous())
    from_tensor = server.post_v1({"instances": [tensor.tolist()]}).json()["predictions"][0]
    from_pixels = _v2_pixels_top(server, photo("chelsea"))
    assert from_tensor["class_indices"][0] == from_pixels[0]


def test_v1_top_k(server):
    r = server.post_v1(v1_body(jpeg("coffee"), top_k=2, bare=True))
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"][0]["class_names"]) == 2


# ----------------------------------------------------------------------------- v2 REST


def test_v2_rest_json_base64_bytes(server):
    r = server.post_v2(v2_body(jpeg("chelsea"), jpeg("coffee"), top_k=3))
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert set(outputs) == {"class_names", "probabilities", "class_indices"}
    names = outputs["class_names"]
    assert names["datatype"] == "BYTES" and names["shape"] == [2, 3]
    _assert_cat(names["data"][0:3])
    _assert_coffee(names["data"][3:6])
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["class_indices"]["datatype"] == "INT64"


def test_v2_rest_binary_with_tritonclient(server):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    images = np.array([jpeg("chelsea"), encode(photo("coffee"), "WEBP")], dtype=np.object_)
    inp = httpclient.InferInput("image", [2], "BYTES")
    inp.set_data_from_numpy(images, binary_data=True)
    outputs = [
        httpclient.InferRequestedOutput(n, binary_data=True) for n in ("class_names", "probabilities", "class_indices")
    ]
    result = client.infer(server.model_name, [inp], outputs=outputs)
    names = result.as_numpy("class_names")
    assert names.shape == (2, 5)
    _assert_cat(_names(names[0]))
    _assert_coffee(_names(names[1]))
    assert result.as_numpy("probabilities").dtype == np.float32
    assert result.as_numpy("class_indices").dtype == np.int64
    # Binary outputs really were binary: the JSON header is shorter than the body.
    assert result.get_output("probabilities")["parameters"]["binary_data_size"] == 2 * 5 * 4


def test_v2_classification_extension_over_rest(server, labels):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    inp = httpclient.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([jpeg("chelsea")], dtype=np.object_), binary_data=True)
    result = client.infer(
        server.model_name, [inp], outputs=[httpclient.InferRequestedOutput("probabilities", class_count=3)]
    )
    rows = result.as_numpy("probabilities")
    assert rows.shape == (1, 3)
    score, index, label = rows[0][0].decode().split(":", 2)
    assert labels[int(index)] == label and 0 < float(score) <= 1
    _assert_cat([r.decode().split(":", 2)[2] for r in rows[0]])


def test_v2_uint8_pixels_of_different_sizes_one_request_each(server):
    for name, check in (("chelsea", _assert_cat), ("coffee", _assert_coffee)):
        top = _v2_pixels_top(server, photo(name), names=True)
        check(top)


def _v2_pixels_top(server, hwc: np.ndarray, names: bool = False):
    result = triton_grpc.infer(server.grpc_url, server.model_name, [("pixels", "UINT8", hwc[None])])
    return _names(result["class_names"][0]) if names else list(result["class_indices"][0])


def test_v2_fp32_preprocessed_tensor_over_rest_binary(server, spec):
    transform = EvalTransform.from_spec(spec)
    batch = torch.stack(
        [transform(torch.from_numpy(photo(n)).permute(2, 0, 1).contiguous()) for n in ("chelsea", "coffee")]
    )
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    inp = httpclient.InferInput("tensor", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch.numpy(), binary_data=True)
    result = client.infer(server.model_name, [inp])
    names = result.as_numpy("class_names")
    _assert_cat(_names(names[0]))
    _assert_coffee(_names(names[1]))


# ----------------------------------------------------------------------------- v2 gRPC


def test_v2_grpc_with_tritonclient_and_classification(server, labels):
    images = np.array([jpeg("coffee"), encode(photo("chelsea"), "PNG")], dtype=np.object_)
    result = triton_grpc.infer(
        server.grpc_url,
        server.model_name,
        [("image", "BYTES", images)],
        outputs=[("class_names", 0), ("probabilities", 2)],
        parameters={"top_k": 4},
    )
    names = result["class_names"]
    assert names.shape == (2, 4)
    _assert_coffee(_names(names[0]))
    _assert_cat(_names(names[1]))
    classified = result["probabilities"]
    assert classified.shape == (2, 2)
    assert classified[0][0].decode().split(":", 2)[2] == _names(names[0])[0]


def test_kserve_clients_rest_and_grpc(server):
    async def run() -> tuple:
        request = InferRequest(
            model_name=server.model_name,
            infer_inputs=[InferInput("image", [1], "BYTES", data=[b64(jpeg("chelsea"))])],
        )
        rest = InferenceRESTClient(RESTConfig(protocol="v2"))
        try:
            rest_response = await rest.infer(server.base_url, request, model_name=server.model_name)
        finally:
            await rest.close()
        grpc = InferenceGRPCClient(server.grpc_url)
        try:
            grpc_response = await grpc.infer(infer_request(server.model_name, jpeg("chelsea")))
        finally:
            await grpc.close()
        return rest_response, grpc_response

    rest_response, grpc_response = asyncio.run(run())
    rest_names = infer_response_predictions(rest_response)[0]["class_names"]
    grpc_names = infer_response_predictions(grpc_response)[0]["class_names"]
    _assert_cat(rest_names)
    assert rest_names == grpc_names


# ----------------------------------------------------------------------------- metadata and health


def test_model_metadata_describes_real_inputs_and_outputs(server, spec):
    meta = httpx.get(f"{server.base_url}/v2/models/{server.model_name}", timeout=10).json()
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert inputs["image"]["datatype"] == "BYTES"
    assert inputs["pixels"] == {"name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}
    assert inputs["tensor"]["shape"] == [-1, 3, spec.crop_size, spec.crop_size]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {
        "class_names": "BYTES",
        "probabilities": "FP32",
        "class_indices": "INT64",
    }
    grpc_meta = triton_grpc.metadata(server.grpc_url, server.model_name)
    assert {i["name"] for i in grpc_meta["inputs"]} == {"image", "pixels", "tensor"}


def test_health_endpoints_tell_the_truth(server):
    assert httpx.get(f"{server.base_url}/v2/health/live", timeout=5).json() == {"live": True}
    assert httpx.get(f"{server.base_url}/v2/health/ready", timeout=5).json() == {"ready": True}
    assert httpx.get(f"{server.base_url}/v2/models/{server.model_name}/ready", timeout=5).status_code == 200
    assert httpx.get(f"{server.base_url}/v2/models/nope/ready", timeout=5).status_code == 404
    assert triton_grpc.health(server.grpc_url, server.model_name) == (True, True, True)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_each_allowed_format_is_decoded(server, fmt):
    images = np.array([encode(photo("chelsea"), fmt)], dtype=np.object_)
    result = triton_grpc.infer(server.grpc_url, server.model_name, [("image", "BYTES", images)])
    _assert_cat(_names(result["class_names"][0]))


def test_v1_json_sent_with_curls_default_form_content_type(server):
    # `curl -d` labels the body application/x-www-form-urlencoded; it is still JSON.
    body = '{{"instances": [{{"b64": "{}"}}]}}'.format(b64(jpeg("chelsea")))
    r = server.post_v1(body.encode(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    _assert_cat(r.json()["predictions"][0]["class_names"])


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc"])
def test_client_script_over_each_protocol(server, tmp_path, protocol):
    import json
    import subprocess
    import sys

    image = tmp_path / "cat.jpg"
    image.write_bytes(jpeg("chelsea"))
    port = server.grpc_port if protocol == "grpc" else server.http_port
    done = subprocess.run(
        [
            sys.executable,
            "scripts/client.py",
            str(image),
            "--url",
            f"127.0.0.1:{port}",
            "--protocol",
            protocol,
            "--model",
            server.model_name,
            "--top_k",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[0])
    assert len(result["class_names"]) == 3
    _assert_cat(result["class_names"])
