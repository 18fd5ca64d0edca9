"""Dynamic batching through the real server: concurrent v1 REST, v2 REST and v2 gRPC
clients share device batches, and each gets the answer it would get alone."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
from kserve import InferenceGRPCClient

from devtools.metrics import Metrics, parse
from devtools.payloads import infer_request, infer_response_predictions, v1_body, v2_body, v2_outputs
from devtools.photos import encode, jpeg, photo


def _batches(metrics: Metrics) -> tuple[float, float]:
    """(batches of one image, all batches) so far, from the batch-size histogram."""
    return metrics.value("predictor_batch_size_bucket", le="1.0"), metrics.value("predictor_batch_size_count")


IMAGES = {
    "chelsea": jpeg("chelsea"),
    "coffee": jpeg("coffee"),
    "astronaut": encode(photo("astronaut"), "PNG"),
    "rocket": encode(photo("rocket"), "WEBP"),
}


async def _v1(client: httpx.AsyncClient, server, data: bytes) -> tuple[list[int], list[float]]:
    r = await client.post(server.v1_url, json=v1_body(data, bare=True))
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    return p["class_indices"], p["probabilities"]


async def _v2_rest(client: httpx.AsyncClient, server, data: bytes) -> tuple[list[int], list[float]]:
    r = await client.post(server.v2_url, json=v2_body(data))
    assert r.status_code == 200, r.text
    outputs = v2_outputs(r.json())
    return outputs["class_indices"], outputs["probabilities"]


async def _v2_grpc(client: InferenceGRPCClient, server, data: bytes) -> tuple[list[int], list[float]]:
    response = await client.infer(infer_request(server.model_name, data))
    prediction = infer_response_predictions(response)[0]
    return prediction["class_indices"], prediction["probabilities"]


def test_concurrent_clients_of_every_protocol_form_batches_and_get_their_own_answers(server):
    async def scenario():
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as http:
            grpc = InferenceGRPCClient(server.grpc_url, timeout=120)
            try:
                alone = {name: await _v1(http, server, data) for name, data in IMAGES.items()}
                before = _batches(parse((await http.get(f"{server.base_url}/metrics")).text))
                calls, expected = [], []
                for round_ in range(6):
                    for i, (name, data) in enumerate(IMAGES.items()):
                        call = (
                            (_v1, _v2_rest)[(round_ + i) % 2](http, server, data)
                            if (round_ + i) % 3
                            else _v2_grpc(grpc, server, data)
                        )
                        calls.append(call)
                        expected.append(name)
                results = await asyncio.gather(*calls)
                after = _batches(parse((await http.get(f"{server.base_url}/metrics")).text))
                return alone, expected, results, before, after
            finally:
                await grpc.close()

    alone, expected, results, before, after = asyncio.run(scenario())
    for name, (indices, probabilities) in zip(expected, results, strict=False):
        assert indices == alone[name][0], name
        np.testing.assert_allclose(probabilities, alone[name][1], rtol=1e-4, atol=1e-6)
    batches = after[1] - before[1]
    batches_of_one = after[0] - before[0]
    assert batches < len(results), "no two requests shared a batch"
    assert batches > batches_of_one, "every batch held a single image"


def test_one_request_with_many_images_is_split_across_batches_and_kept_in_order(server):
    # The server's max_batch_size is 8: 12 images need at least two batches.
    order = ["chelsea", "coffee", "astronaut", "rocket"] * 3
    r = server.post_v1(v1_body(*[IMAGES[n] for n in order], bare=True), timeout_s=120)
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert len(predictions) == 12
    for i in range(4):
        assert (
            predictions[i]["class_indices"]
            == predictions[i + 4]["class_indices"]
            == predictions[i + 8]["class_indices"]
        )
    assert predictions[0]["class_indices"] != predictions[1]["class_indices"]
