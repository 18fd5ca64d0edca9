"""Bodies users already send: TorchServe's v1 form and bare base64 instances, a v2 BYTES input under
the client's own name (`input-0`), and v2 JSON whatever content type labels it."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest

from devtools.payloads import b64, infer_response_predictions, to_json, v2_input, v2_predictions
from devtools.photos import CAT_CLASSES, COFFEE_CLASSES, encode, jpeg, photo


def _is_cat(prediction: dict) -> bool:
    return bool(CAT_CLASSES & set(prediction["class_names"][:3]))


# ----------------------------------------------------------------------------- v1


def test_torchserve_instances_as_kserves_torchserve_samples_send_them(server):
    async def call() -> dict:
        client = InferenceRESTClient(RESTConfig(protocol="v1"))
        try:
            body = {"instances": [{"data": b64(jpeg("chelsea"))}]}
            return await client.infer(server.base_url, body, model_name=server.model_name)
        finally:
            await client.close()

    assert _is_cat(asyncio.run(call())["predictions"][0])


def test_a_bare_base64_string_is_an_image(server):
    r = server.post_v1({"instances": [b64(jpeg("chelsea"))], "top_k": 2})
    assert r.status_code == 200, r.text
    assert _is_cat(r.json()["predictions"][0])
    assert len(r.json()["predictions"][0]["class_names"]) == 2


def test_every_instance_form_in_one_request(server):
    coffee = encode(photo("coffee"), "PNG")
    body = {
        "instances": [
            {"image": {"b64": b64(jpeg("chelsea"))}},
            {"b64": b64(coffee)},
            {"data": b64(jpeg("chelsea"))},
            b64(coffee),
        ]
    }
    r = server.post_v1(body)
    assert r.status_code == 200, r.text
    cat, cup, cat_again, cup_again = r.json()["predictions"]
    assert _is_cat(cat) and _is_cat(cat_again)
    assert COFFEE_CLASSES & set(cup["class_names"][:3]) and cup["class_names"] == cup_again["class_names"]


@pytest.mark.parametrize(
    "instance, fragments",
    [
        ("not*base64!", ["instances[0] is not valid base64"]),
        ({"data": 7}, ["instances[0].data must be a base64 string, got int"]),
        ({"data": b64(b"plain text")}, ["instances[0]: image format not recognised"]),
        ({"data": "x", "extra": 1}, ['{"data": "<base64>"} (TorchServe)', "got an object with keys ['data', 'extra']"]),
        (7, ['a bare "<base64>" string', "got int"]),
    ],
    ids=["bare string not base64", "data not a string", "data not an image", "extra key", "a number"],
)
def test_bad_instances_get_400_naming_the_instance(server, instance, fragments):
    r = server.post_v1({"instances": [instance]})
    assert r.status_code == 400, r.text
    for fragment in fragments:
        assert fragment in r.json()["error"]
    server.assert_still_serving()


# ----------------------------------------------------------------------------- v2: the input's name


def test_a_bytes_input_under_another_name_over_rest_json(server):
    r = server.post_v2({"inputs": [v2_input("input-0", "BYTES", [1], [b64(jpeg("chelsea"))])]})
    assert r.status_code == 200, r.text
    assert _is_cat(v2_predictions(r.json())[0])


def test_a_bytes_input_under_another_name_with_tritonclient_binary(server):
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    image = triton_http.InferInput("INPUT__0", [1], "BYTES")
    image.set_data_from_numpy(np.array([jpeg("chelsea")], dtype=np.object_), binary_data=True)
    names = client.infer(server.model_name, [image]).as_numpy("class_names")[0]
    assert CAT_CLASSES & {n.decode() for n in names[:3]}


def test_a_bytes_input_under_another_name_over_grpc_and_its_errors_name_it(server):
    async def call(data: bytes):
        tensor = InferInput("input-0", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([data], dtype=np.object_), binary_data=True)
        client = InferenceGRPCClient(server.grpc_url)
        try:
            return await client.infer(InferRequest(model_name=server.model_name, infer_inputs=[tensor]))
        finally:
            await client.close()

    assert _is_cat(infer_response_predictions(asyncio.run(call(jpeg("chelsea"))))[0])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        asyncio.run(call(b"not an image"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'input-0'[0]: image format not recognised" in (info.value.details() or "")


@pytest.mark.parametrize(
    "tensor, fragment",
    [
        (v2_input("input-0", "BYTES", [2], [b64(jpeg("chelsea"))]), "input 'input-0' declares shape [2]"),
        (v2_input("input-0", "BYTES", [1], ["%%%"]), "input 'input-0'[0] is not valid base64"),
        (v2_input("input-0", "FP32", [1], [0.5]), "unknown input 'input-0'"),
    ],
    ids=["shape", "base64", "not BYTES"],
)
def test_errors_name_the_input_as_the_client_did(server, tensor, fragment):
    r = server.post_v2({"inputs": [tensor]})
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]
    if tensor["datatype"] != "BYTES":
        assert "a BYTES input under another name is taken as 'image'" in r.json()["error"]


# ----------------------------------------------------------------------------- v2: JSON whatever its label


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/x-www-form-urlencoded", "text/plain", "application/octet-stream", None],
)
def test_a_v2_body_without_the_binary_header_is_json(server, content_type):
    body = to_json({"inputs": [v2_input("image", "BYTES", [1], [b64(jpeg("chelsea"))])]})
    headers = {} if content_type is None else {"content-type": content_type}
    r = httpx.post(server.v2_url, content=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    assert _is_cat(v2_predictions(r.json())[0])


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"not json", "v2 request body must be JSON, or binary with the 'inference-header-content-length' header"),
        (b'{"inputs": "image"}', "invalid request: inputs: Input should be a valid"),
        (b'{"input": []}', "invalid request: inputs: Field required"),
    ],
    ids=["not json", "inputs not a list", "no inputs"],
)
def test_a_bad_v2_body_with_a_form_label_gets_400_saying_what_is_wrong(server, body, fragment):
    r = httpx.post(server.v2_url, content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(fragment), r.json()
    server.assert_still_serving()
