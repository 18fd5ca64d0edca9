"""Bad input gets a 400 (gRPC INVALID_ARGUMENT) whose message says what was wrong,
never a 500 or a stack trace, and the server still answers a reference image correctly afterwards."""

from __future__ import annotations

import struct

import httpx
import numpy as np
import pytest

from devtools import triton_grpc
from devtools.payloads import BINARY_HEADER, b64, bytes_element, v1_body, v2_binary_request, v2_binary_tensor, v2_input
from devtools.photos import encode, jpeg, photo


@pytest.fixture
def still_serving(server):
    """After each test: a good request is still answered correctly."""
    yield
    server.assert_still_serving()


def _no_internals(text: str) -> None:
    for leak in ("Traceback", 'File "', ".py", "site-packages", "Error :"):
        assert leak not in text, text


def _expect_400(r: httpx.Response, *fragments: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text)
    message = r.json()["error"]
    for fragment in fragments:
        assert fragment in message, message
    _no_internals(r.text)


def _bytes_input(data: list) -> dict:
    return {"inputs": [v2_input("image", "BYTES", [len(data)], data)]}


V1_CASES = {
    "undecodable bytes": ({"instances": [{"b64": b64(b"\xff\xd8\xff" + b"\x00" * 64)}]}, ["instances[0]"]),
    "random bytes": ({"instances": [{"b64": b64(bytes(range(256)) * 4)}]}, ["not recognised"]),
    "bad base64": ({"instances": [{"image": {"b64": "not*base64!"}}]}, ["instances[0].image.b64", "base64"]),
    "empty instances": ({"instances": []}, ["empty"]),
    "no instances": ({"inputs": []}, ['"instances"']),
    "wrong tensor shape": ({"instances": [[[0.0] * 4] * 3]}, ["instances[0]", "[3, 224, 224]", "got [3, 4]"]),
    "unknown instance keys": ({"instances": [{"jpeg": "x"}]}, ["instances[0]", "b64"]),
    "not json": (b"{not json", ["Unrecognized request format"]),
    "bad top_k": ({"instances": [{"b64": b64(jpeg("chelsea"))}], "top_k": 0}, ["top_k", "1..1000"]),
}


@pytest.mark.parametrize("case", list(V1_CASES))
def test_v1_bad_input(server, still_serving, case):
    body, fragments = V1_CASES[case]
    _expect_400(server.post_v1(body), *fragments)


def test_a_truncated_jpeg_gets_400_naming_the_decode_failure(server, still_serving):
    truncated = jpeg("chelsea")[:2000]
    r = server.post_v1(v1_body(truncated, bare=True))
    _expect_400(r, "could not be decoded")


V2_CASES = {
    "empty request": ({"inputs": []}, ["no inputs"]),
    "unknown input name": (
        {"inputs": [{"name": "img", "datatype": "UINT8", "shape": [1, 1, 3], "data": [0, 0, 0]}]},
        ["unknown input 'img'", "'image' (BYTES)"],
    ),
    "wrong dtype": (
        {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
        ["'image'", "BYTES", "got FP32"],
    ),
    "shape disagrees with data": (
        {"inputs": [{"name": "tensor", "datatype": "FP32", "shape": [1, 3, 224, 224], "data": [0.0] * 10}]},
        ["'tensor'", "needs 150528 elements, got 10"],
    ),
    "wrong tensor shape": (
        {"inputs": [{"name": "tensor", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [0.0] * 192}]},
        ["[N, 3, 224, 224]", "got [N, 3, 8, 8]"],
    ),
    "zero dimension": (
        {"inputs": [{"name": "tensor", "datatype": "FP32", "shape": [0, 3, 224, 224], "data": []}]},
        ["dimension <= 0"],
    ),
    "negative dimension": (
        {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [-1, 4, 4, 3], "data": [0] * 48}]},
        ["dimension <= 0"],
    ),
    "overflowing dimensions": (
        {"inputs": [{"name": "tensor", "datatype": "FP32", "shape": [2**62, 2**62, 3, 3], "data": [0.0]}]},
        ["max_tensor_elements"],
    ),
    "unsupported datatype": (
        {"inputs": [{"name": "image", "datatype": "COMPLEX128", "shape": [1], "data": ["x"]}]},
        ["'image'", "BYTES", "COMPLEX128"],
    ),
    "NaN": (
        {
            "inputs": [
                {
                    "name": "tensor",
                    "datatype": "FP32",
                    "shape": [1, 3, 224, 224],
                    "data": ["NaN"] + [0.0] * (150528 - 1),
                }
            ]
        },
        [],  # pydantic or our finite check: either way a 400 that names the input or the value
    ),
    "bad base64": (_bytes_input(["%%%"]), ["'image'[0]", "base64"]),
    "undecodable image": (_bytes_input([b64(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)]), ["'image'[0]"]),
    "uint8 out of range": (
        {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 1, 1, 3], "data": [0, 256, 3]}]},
        ["0..255"],
    ),
    "two inputs": (
        {
            "inputs": [
                {"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64(jpeg("chelsea"))]},
                {"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64(jpeg("chelsea"))]},
            ]
        },
        ["exactly one input"],
    ),
    "unknown output": (
        {"inputs": _bytes_input([b64(jpeg("chelsea"))])["inputs"], "outputs": [{"name": "logits"}]},
        ["unknown output 'logits'"],
    ),
    "bad class_count": (
        {
            "inputs": _bytes_input([b64(jpeg("chelsea"))])["inputs"],
            "outputs": [{"name": "probabilities", "parameters": {"class_count": 5000}}],
        },
        ["class_count", "1..1000"],
    ),
    "missing inputs key": ({"id": "x"}, ["inputs"]),
}


@pytest.mark.parametrize("case", list(V2_CASES))
def test_v2_rest_bad_input(server, still_serving, case):
    body, fragments = V2_CASES[case]
    _expect_400(server.post_v2(body), *fragments)


@pytest.mark.parametrize(
    "header_value, fragment",
    [("abc", "must be an integer"), ("-5", "must be >= 0"), ("999999", "body has only")],
)
def test_v2_binary_header_that_is_not_a_valid_length(server, still_serving, header_value, fragment):
    body, headers = v2_binary_request("image", "BYTES", [1], bytes_element(b""))
    _expect_400(server.post_v2(body, headers | {BINARY_HEADER: header_value}), fragment)


def test_v2_binary_size_larger_than_what_was_sent(server, still_serving):
    image = jpeg("chelsea")
    body, headers = v2_binary_request("image", "BYTES", [1], bytes_element(image), binary_data_size=len(image) + 100)
    _expect_400(server.post_v2(body, headers), "binary_data_size")


def test_v2_binary_bytes_element_length_prefix_lies(server, still_serving):
    payload = struct.pack("<I", 10_000) + b"abc"
    body, headers = v2_binary_request("image", "BYTES", [1], payload)
    _expect_400(server.post_v2(body, headers), "declares 10000 bytes")


def test_v2_binary_fp32_byte_count_mismatch(server, still_serving):
    body, headers = v2_binary_request("tensor", "FP32", [1, 3, 224, 224], np.zeros(10, dtype=np.float32).tobytes())
    _expect_400(server.post_v2(body, headers), "needs 602112 bytes of FP32, got 40")


def test_v2_binary_nan_tensor(server, still_serving):
    array = np.zeros((1, 3, 224, 224), dtype=np.float32)
    array[0, 1, 2, 3] = np.inf
    _expect_400(server.post_v2(*v2_binary_tensor("tensor", array)), "NaN or Inf")


@pytest.mark.parametrize(
    "name, datatype, array, fragment",
    [
        ("image", "BYTES", np.array([b"definitely not an image"], dtype=np.object_), "not recognised"),
        ("pixels", "FP32", np.zeros((1, 2, 2, 3), dtype=np.float32), "must have datatype UINT8"),
        ("photo", "UINT8", np.zeros((1, 2, 2, 3), dtype=np.uint8), "unknown input 'photo'"),
        ("tensor", "FP32", np.full((1, 3, 224, 224), np.nan, dtype=np.float32), "NaN or Inf"),
        ("image", "BYTES", np.array([encode(photo("chelsea"), "TIFF")], dtype=np.object_), "TIFF is not supported"),
    ],
    ids=["not an image", "wrong dtype", "unknown input", "nan", "tiff"],
)
def test_grpc_bad_inputs_are_invalid_argument(server, still_serving, name, datatype, array, fragment):
    with pytest.raises(triton_grpc.TritonGrpcError) as info:
        triton_grpc.infer(server.grpc_url, server.model_name, [(name, datatype, array)])
    assert info.value.status == "StatusCode.INVALID_ARGUMENT", info.value
    assert fragment in info.value.message, info.value.message
    _no_internals(info.value.message)


def test_grpc_empty_request(server, still_serving):
    with pytest.raises(triton_grpc.TritonGrpcError) as info:
        triton_grpc.infer(server.grpc_url, server.model_name, [])
    assert info.value.status == "StatusCode.INVALID_ARGUMENT"
    assert "no inputs" in info.value.message
