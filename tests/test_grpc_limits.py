"""KServe's --grpc_max_receive_message_length / --grpc_max_send_message_length with --max_body_bytes:
--max_body_bytes caps every request and wins; the gRPC flags may lower it for gRPC, and shape responses."""

from __future__ import annotations

import asyncio
import logging

import grpc
import numpy as np
import pytest
from kserve import InferenceGRPCClient

from devtools import launcher
from devtools.artifacts import make_small_artifact
from devtools.payloads import GRPC_INFER_METHOD, grpc_request_bytes, infer_request, v1_body
from devtools.photos import encode, jpeg
from predictor.__main__ import main

MAX_BODY_BYTES = 1_000_000
GRPC_RECEIVE_BYTES = 200_000
GRPC_SEND_BYTES = 300


def _noise_png(side: int) -> bytes:
    """A PNG that does not compress: about 3 bytes per pixel."""
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return encode(pixels, "PNG")


@pytest.fixture(scope="module")
def small_artifact(tmp_path_factory):
    directory = tmp_path_factory.mktemp("small")
    make_small_artifact(directory)
    return directory


@pytest.fixture(scope="module")
def tight(small_artifact):
    running = launcher.start(
        small_artifact,
        "--max_body_bytes",
        str(MAX_BODY_BYTES),
        "--grpc_max_receive_message_length",
        str(GRPC_RECEIVE_BYTES),
        "--grpc_max_send_message_length",
        str(GRPC_SEND_BYTES),
    )
    yield running
    running.stop()


def _grpc_call(url: str, request: bytes) -> grpc.StatusCode:
    with grpc.insecure_channel(url, options=[("grpc.max_send_message_length", -1)]) as channel:
        try:
            channel.unary_unary(GRPC_INFER_METHOD)(request, timeout=60)
        except grpc.RpcError as e:
            return e.code()
    return grpc.StatusCode.OK


def test_a_lower_grpc_receive_limit_holds_for_grpc_and_max_body_bytes_for_rest(tight):
    image = _noise_png(300)  # ~270 KB: over the gRPC limit, under --max_body_bytes
    assert GRPC_RECEIVE_BYTES < len(image) < MAX_BODY_BYTES * 3 // 4
    assert _grpc_call(tight.grpc_url, grpc_request_bytes(tight.model_name, image)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert tight.post_v1(v1_body(image)).status_code == 200
    assert _grpc_call(tight.grpc_url, grpc_request_bytes(tight.model_name, jpeg("chelsea"))) == grpc.StatusCode.OK
    assert f"messages up to {GRPC_RECEIVE_BYTES} bytes in, {GRPC_SEND_BYTES} out" in tight.log()


def test_the_grpc_send_limit_holds_for_responses(tight):
    async def call(top_k: int) -> grpc.StatusCode:
        client = InferenceGRPCClient(tight.grpc_url)
        try:
            await client.infer(infer_request(tight.model_name, jpeg("chelsea"), top_k=top_k))
        except grpc.aio.AioRpcError as e:
            return e.code()
        finally:
            await client.close()
        return grpc.StatusCode.OK

    # One class fits in the limit; all ten names, scores and indices do not.
    assert asyncio.run(call(1)) == grpc.StatusCode.OK
    assert asyncio.run(call(10)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert asyncio.run(call(1)) == grpc.StatusCode.OK


def test_without_the_grpc_flags_max_body_bytes_is_the_grpc_limit(small_artifact):
    """Not KServe's 8 MiB default: one limit for both protocols."""
    running = launcher.start(small_artifact, "--max_body_bytes", str(MAX_BODY_BYTES))
    try:
        big = _noise_png(600)  # ~1 MB
        assert len(big) > MAX_BODY_BYTES
        assert _grpc_call(running.grpc_url, grpc_request_bytes(running.model_name, big)) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert f"messages up to {MAX_BODY_BYTES} bytes in, {MAX_BODY_BYTES} out" in running.log()
        assert _grpc_call(running.grpc_url, grpc_request_bytes(running.model_name, jpeg("chelsea"))) == (
            grpc.StatusCode.OK
        )
    finally:
        assert running.stop() == 0


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (
            ["--grpc_max_receive_message_length", "2000000"],
            "--grpc_max_receive_message_length=2000000 is more than --max_body_bytes=1000000, which caps every "
            "request on REST and gRPC and wins",
        ),
        (["--grpc_max_receive_message_length", "-1"], "--grpc_max_receive_message_length=-1 (unlimited) is more than"),
        (["--grpc_max_receive_message_length", "0"], "--grpc_max_receive_message_length must be an integer in 1.."),
        (["--grpc_max_send_message_length", "0"], "--grpc_max_send_message_length must be an integer >= 1 or -1"),
    ],
    ids=["receive above max_body_bytes", "receive unlimited", "receive zero", "send zero"],
)
def test_grpc_limits_that_contradict_max_body_bytes_are_refused(small_artifact, caplog, flags, fragment):
    argv = ["--model_dir", str(small_artifact), "--configure_logging", "false", "--max_body_bytes", "1000000", *flags]
    with caplog.at_level(logging.ERROR, logger="predictor"):
        assert main(argv) == 2
    assert any(fragment in r.message for r in caplog.records), caplog.text
