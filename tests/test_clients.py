"""One photo through every client users bring, against one real server: KServe's InferenceRESTClient
(v1, v2 JSON, v2 binary) and InferenceGRPCClient, tritonclient over HTTP and gRPC, curl, and grpcurl's
JSON (protobuf's JSON mapping, through grpcio and through the grpcurl binary). All give the same answer."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.http as triton_http
from google.protobuf import json_format
from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from kserve.protocol.infer_type import InferInput, InferRequest

from devtools import triton_grpc
from devtools.launcher import RunningServer
from devtools.payloads import b64, infer_request, infer_response_predictions, v1_body, v2_body, v2_predictions
from devtools.photos import CAT_CLASSES, jpeg

TOP_K = 3
Answer = dict[str, list]  # class_names, class_indices, probabilities of the one image


def _first(prediction: dict) -> Answer:
    return {key: list(prediction[key])[:TOP_K] for key in ("class_names", "class_indices", "probabilities")}


def _run(coroutine):
    return asyncio.run(coroutine)


# ----------------------------------------------------------------------------- the clients


def kserve_rest_v1(server: RunningServer, photo: bytes) -> Answer:
    async def call() -> dict:
        client = InferenceRESTClient(RESTConfig(protocol="v1"))
        try:
            return await client.infer(server.base_url, v1_body(photo, top_k=TOP_K), model_name=server.model_name)
        finally:
            await client.close()

    return _first(_run(call())["predictions"][0])


def kserve_rest_v2_json(server: RunningServer, photo: bytes) -> Answer:
    request = InferRequest(
        model_name=server.model_name,
        infer_inputs=[InferInput("image", [1], "BYTES", data=[b64(photo)])],
        parameters={"top_k": TOP_K},
    )
    return _first(infer_response_predictions(_kserve_rest_v2(server, request))[0])


def kserve_rest_v2_binary(server: RunningServer, photo: bytes) -> Answer:
    # Raw bytes: KServe's client sends the binary tensor extension with its header.
    request = infer_request(server.model_name, photo, top_k=TOP_K)
    return _first(infer_response_predictions(_kserve_rest_v2(server, request))[0])


def _kserve_rest_v2(server: RunningServer, request: InferRequest):
    async def call():
        client = InferenceRESTClient(RESTConfig(protocol="v2"))
        try:
            return await client.infer(server.base_url, request, model_name=server.model_name)
        finally:
            await client.close()

    return _run(call())


def kserve_grpc(server: RunningServer, photo: bytes) -> Answer:
    async def call():
        client = InferenceGRPCClient(server.grpc_url)
        try:
            return await client.infer(infer_request(server.model_name, photo, top_k=TOP_K))
        finally:
            await client.close()

    return _first(infer_response_predictions(_run(call()))[0])


def tritonclient_http(server: RunningServer, photo: bytes) -> Answer:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    image = triton_http.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([photo], dtype=np.object_), binary_data=True)
    result = client.infer(server.model_name, [image], parameters={"top_k": TOP_K})
    return _first(
        {
            "class_names": [n.decode() for n in result.as_numpy("class_names")[0]],
            "class_indices": result.as_numpy("class_indices")[0].tolist(),
            "probabilities": result.as_numpy("probabilities")[0].tolist(),
        }
    )


def tritonclient_grpc(server: RunningServer, photo: bytes) -> Answer:
    result = triton_grpc.infer(
        server.grpc_url,
        server.model_name,
        [("image", "BYTES", np.array([photo], dtype=np.object_))],
        parameters={"top_k": TOP_K},
    )
    return _first(
        {
            "class_names": [n.decode() for n in result["class_names"][0]],
            "class_indices": result["class_indices"][0].tolist(),
            "probabilities": result["probabilities"][0].tolist(),
        }
    )


def _curl(url: str, body: dict, tmp_path: Path) -> dict:
    # `--data-binary @file` as `curl -d`: curl labels it application/x-www-form-urlencoded.
    (tmp_path / "body.json").write_text(json.dumps(body))
    done = subprocess.run(
        ["curl", "-s", "--fail-with-body", url, "--data-binary", f"@{tmp_path / 'body.json'}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def curl_v1(server: RunningServer, photo: bytes, tmp_path: Path) -> Answer:
    return _first(_curl(server.v1_url, v1_body(photo, top_k=TOP_K), tmp_path)["predictions"][0])


def curl_v2(server: RunningServer, photo: bytes, tmp_path: Path) -> Answer:
    return _first(v2_predictions(_curl(server.v2_url, v2_body(photo, top_k=TOP_K), tmp_path))[0])


def grpcurl_request(server: RunningServer, photo: bytes) -> str:
    """What a grpcurl user types: protobuf's JSON mapping of ModelInferRequest, bytes in base64."""
    return json.dumps(
        {
            "model_name": server.model_name,
            "inputs": [
                {"name": "image", "datatype": "BYTES", "shape": [1], "contents": {"bytes_contents": [b64(photo)]}}
            ],
            "parameters": {"top_k": {"int64_param": TOP_K}},
        }
    )


def from_grpcurl_response(response: dict) -> Answer:
    """ModelInferResponse in protobuf's JSON: bytes as base64, 64-bit integers as strings."""
    outputs = {o["name"]: o["contents"] for o in response["outputs"]}
    return _first(
        {
            "class_names": [base64.b64decode(n).decode() for n in outputs["class_names"]["bytes_contents"]],
            "class_indices": [int(i) for i in outputs["class_indices"]["int64_contents"]],
            "probabilities": outputs["probabilities"]["fp32_contents"],
        }
    )


def grpcurl_json(server: RunningServer, photo: bytes) -> Answer:
    """grpcurl's JSON through protobuf's own JSON mapping and grpcio: what grpcurl does, without the binary."""
    request = json_format.Parse(grpcurl_request(server, photo), pb.ModelInferRequest())
    with grpc.insecure_channel(server.grpc_url) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    return from_grpcurl_response(json_format.MessageToDict(response, preserving_proto_field_name=True))


def grpcurl_binary(server: RunningServer, photo: bytes, tmp_path: Path) -> Answer:
    grpcurl = Path(sys.executable).parent / "grpcurl"
    if not grpcurl.exists():
        pytest.skip("grpcurl comes with the dev extra on x86-64 Linux only")
    (tmp_path / "request.json").write_text(grpcurl_request(server, photo))
    done = subprocess.run(
        f"{grpcurl} -plaintext -d @ {server.grpc_url} inference.GRPCInferenceService/ModelInfer < request.json",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return from_grpcurl_response(json.loads(done.stdout))


CLIENTS: dict[str, Callable[..., Answer]] = {
    "kserve rest v1": kserve_rest_v1,
    "kserve rest v2 json": kserve_rest_v2_json,
    "kserve rest v2 binary": kserve_rest_v2_binary,
    "kserve grpc": kserve_grpc,
    "tritonclient http": tritonclient_http,
    "tritonclient grpc": tritonclient_grpc,
    "curl v1": curl_v1,
    "curl v2": curl_v2,
    "grpcurl json": grpcurl_json,
    "grpcurl": grpcurl_binary,
}


@pytest.fixture(scope="module")
def reference(server) -> Answer:
    r = server.post_v1(v1_body(jpeg("chelsea"), top_k=TOP_K))
    assert r.status_code == 200, r.text
    answer = _first(r.json()["predictions"][0])
    assert CAT_CLASSES & set(answer["class_names"])
    return answer


@pytest.mark.parametrize("client", list(CLIENTS))
def test_every_client_gets_the_same_answer(server, reference, tmp_path, client):
    call = CLIENTS[client]
    wants_dir = "tmp_path" in call.__code__.co_varnames[: call.__code__.co_argcount]
    answer = call(server, jpeg("chelsea"), tmp_path) if wants_dir else call(server, jpeg("chelsea"))
    assert answer["class_names"] == reference["class_names"]
    assert answer["class_indices"] == reference["class_indices"]
    assert answer["probabilities"] == pytest.approx(reference["probabilities"], abs=1e-6)


def test_kserve_clients_see_the_servers_errors(server):
    """A refused request reaches KServe's clients as the server's 400 and INVALID_ARGUMENT, with its message."""
    request = InferRequest(
        model_name=server.model_name, infer_inputs=[InferInput("image", [1], "BYTES", data=[b64(b"not an image")])]
    )

    async def call() -> tuple[str, grpc.StatusCode, str]:
        rest = InferenceRESTClient(RESTConfig(protocol="v2"))
        grpc_client = InferenceGRPCClient(server.grpc_url)
        try:
            try:
                await rest.infer(server.base_url, request, model_name=server.model_name)
            except Exception as e:  # httpx.HTTPStatusError, as KServe's client raises it
                rest_message = str(e)
            try:
                await grpc_client.infer(infer_request(server.model_name, b"not an image"))
            except grpc.aio.AioRpcError as e:
                return rest_message, e.code(), e.details() or ""
        finally:
            await rest.close()
            await grpc_client.close()
        raise AssertionError("the gRPC request was accepted")

    rest_message, code, details = _run(call())
    assert "400" in rest_message and "input 'image'[0]: image format not recognised" in rest_message
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'image'[0]: image format not recognised" in details
