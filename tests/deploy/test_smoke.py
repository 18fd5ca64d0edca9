"""`make predict`'s own requests, sent to a real predictor: the smoke payloads cannot drift from
what the server accepts."""

import json

import pytest

from devtools import launcher
from isvctl import smoke


@pytest.fixture(scope="module")
def predictor(default_model_dir):
    running = launcher.start(default_model_dir, "--max_batch_size", "4", model_name="image-classifier")
    yield running
    running.stop()


def test_the_v1_and_v2_smoke_requests_are_answered_with_predictions(predictor):
    requests = smoke.requests_for(predictor.base_url, predictor.model_name, None)
    assert [r.label for r in requests] == ["v1", "v2"]
    for request in requests:
        line = smoke.send(request, timeout_s=60)
        assert line.startswith(f"{request.label}: HTTP 200 "), line


def test_through_an_ingress_the_host_header_names_the_service(predictor):
    # A gateway routes on Host; the predictor ignores it, so the same requests must still work.
    (v1, _) = smoke.requests_for(
        "http://image-classifier.ml-serving.example.com", predictor.model_name, predictor.base_url
    )
    assert v1.host == "image-classifier.ml-serving.example.com"
    assert smoke.send(v1, timeout_s=60).startswith("v1: HTTP 200 ")
    assert json.loads(v1.body)["instances"][0]["image"]["b64"]
