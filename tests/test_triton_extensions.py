"""Triton's model configuration and statistics extensions over REST, read with tritonclient and checked
against Triton's own protobuf schemas (model_config.proto, grpc_service.proto's ModelStatisticsResponse)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from devtools import launcher
from devtools.artifacts import make_small_artifact
from devtools.payloads import b64, v1_body, v2_body
from devtools.photos import encode, jpeg, photo

# Triton's protos and KServe's share the protobuf package `inference`: they are loaded next door.
_PARSE_WITH_TRITONS_SCHEMA = r"""
import json, sys
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2
kind, document = json.load(sys.stdin)
message = {"config": model_config_pb2.ModelConfig, "stats": service_pb2.ModelStatisticsResponse}[kind]()
json_format.ParseDict(document, message)  # raises on any unknown field or wrong type
print(json_format.MessageToJson(message, preserving_proto_field_name=True))
"""


def _parse_with_tritons_schema(kind: str, document: dict) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PARSE_WITH_TRITONS_SCHEMA],
        input=json.dumps([kind, document]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _client(server) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")


def test_model_config_with_tritonclient(server, spec):
    config = _client(server).get_model_config(server.model_name)
    _parse_with_tritons_schema("config", config)
    assert config["name"] == server.model_name
    assert config["max_batch_size"] == 64  # --max_images_per_request: what one request may carry
    inputs = {i["name"]: i for i in config["input"]}
    assert inputs["image"] == {"name": "image", "data_type": "TYPE_STRING", "dims": [1], "reshape": {"shape": []}}
    assert inputs["pixels"] == {"name": "pixels", "data_type": "TYPE_UINT8", "dims": [-1, -1, 3]}
    assert inputs["tensor"]["dims"] == [3, spec.crop_size, spec.crop_size]
    assert {o["name"]: o["data_type"] for o in config["output"]} == {
        "class_names": "TYPE_STRING",
        "probabilities": "TYPE_FP32",
        "class_indices": "TYPE_INT64",
    }
    # The `server` fixture's --max_batch_size 8 --max_latency_ms 2, and the default queue and deadline.
    assert config["dynamic_batching"] == {
        "preferred_batch_size": [8],
        "max_queue_delay_microseconds": 2000,
        "default_queue_policy": {
            "timeout_action": "REJECT",
            "max_queue_size": 1024,
            "default_timeout_microseconds": 10_000_000,
        },
    }
    assert config["parameters"]["architecture"] == {"string_value": "efficientnet-lite0"}
    assert config["parameters"]["device"] == {"string_value": "cpu"}


def test_statistics_count_what_happened(server):
    client = _client(server)
    (before,) = client.get_inference_statistics(server.model_name)["model_stats"]
    started_ms = time.time() * 1000
    assert server.post_v1(v1_body(jpeg("chelsea"), encode(photo("coffee"), "PNG"))).status_code == 200
    assert server.post_v2(v2_body(jpeg("chelsea"))).status_code == 200
    image = triton_http.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([jpeg("coffee")], dtype=np.object_))
    client.infer(server.model_name, [image])
    assert server.post_v1({"instances": [b64(b"not an image")]}).status_code == 400
    (after,) = client.get_inference_statistics(server.model_name)["model_stats"]
    _parse_with_tritons_schema("stats", {"model_stats": [after]})

    def delta(*path: str) -> int:
        a, b = after, before
        for key in path:
            a, b = a[key], b[key]
        return a - b

    assert after["name"] == server.model_name
    assert delta("inference_count") == 4  # images
    assert delta("inference_stats", "success", "count") == 3  # requests
    assert delta("inference_stats", "fail", "count") == 1
    assert delta("inference_stats", "queue", "count") == 4  # per image
    batches = delta("execution_count")
    assert 1 <= batches <= 4
    for stage in ("compute_input", "compute_infer", "compute_output"):
        assert delta("inference_stats", stage, "count") == batches
        assert delta("inference_stats", stage, "ns") > 0
    # Every stage of every request lies within the requests' own time.
    success_ns = delta("inference_stats", "success", "ns")
    assert delta("inference_stats", "compute_infer", "ns") < success_ns
    assert after["last_inference"] >= started_ms - 1000
    assert after["inference_stats"]["cache_hit"] == {"count": 0, "ns": 0}


def test_statistics_of_every_model_and_of_an_unknown_one(server):
    client = _client(server)
    assert [m["name"] for m in client.get_inference_statistics()["model_stats"]] == [server.model_name]
    with pytest.raises(InferenceServerException) as info:
        client.get_inference_statistics("nope")
    assert "nope" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.get_model_config("nope")
    assert "nope" in info.value.message()


def test_statistics_are_the_whole_pods_under_workers(tmp_path):
    """Read from the shared metrics: whichever worker answers, it counts every worker's requests."""
    make_small_artifact(tmp_path)
    running = launcher.start(tmp_path, "--workers", "2")
    try:
        for _ in range(6):  # a connection each: the kernel spreads them over the workers
            assert running.post_v1(v1_body(jpeg("chelsea"))).status_code == 200
        answers = {
            _client(running).get_inference_statistics(running.model_name)["model_stats"][0]["inference_count"]
            for _ in range(6)
        }
        assert answers == {6}
    finally:
        assert running.stop() == 0
