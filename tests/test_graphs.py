"""The InferenceGraph examples run against real processes: two real predictors (the members) and the
real combiner, called the way KServe's router calls them (tests/deploy/graph_router.py).

The responses the condition tests read (tests/deploy/recorded/) are recorded from the real
predictor; the first test checks they are still what it answers. After a deliberate change to
the model or the codec, record them again: `GRAPH_RECORD=1 pytest tests/test_graphs.py`.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml

from devtools import launcher
from devtools.artifacts import export
from devtools.payloads import to_json, v1_body
from devtools.photos import encode, jpeg, photo

from .deploy.conftest import MANIFESTS
from .deploy.graph_router import RECORDED, Router, recorded

# What each recording sends to the cascade's first member (efficientnet-lite0).
RECORDINGS = {
    "v1-coffee": v1_body(jpeg("coffee")),  # top-1 0.95: the small model is sure
    "v1-chelsea": v1_body(jpeg("chelsea")),  # top-1 0.37 (Egyptian cat against tiger cat)
    "v1-coffee-chelsea": v1_body(jpeg("coffee"), jpeg("chelsea")),
    "v1-error-tiff": v1_body(encode(photo("coffee"), "TIFF")),  # a 400 body, as a failed step answers
}


def _graph(name: str) -> dict:
    docs = yaml.safe_load_all((MANIFESTS / "graphs" / f"{name}.yaml").read_text())
    return next(d for d in docs if d["kind"] == "InferenceGraph")


@pytest.fixture(scope="module")
def large_model_dir(tmp_path_factory):
    """The large member: the same network with bicubic resizing, so its answers differ from the small
    one's in the last digits (which member answered is visible) on the same label set."""
    directory = tmp_path_factory.mktemp("large")
    export(directory, arch="efficientnet-lite0", interpolation="bicubic")
    return directory


@pytest.fixture(scope="module")
def members(default_model_dir, large_model_dir):
    small = launcher.launch(default_model_dir, "--device", "cpu", model_name="small-image-classifier")
    large = launcher.launch(large_model_dir, "--device", "cpu", model_name="large-image-classifier")
    combiner = launcher.launch(None, "--top_k", "5", model_name="combiner", module="predictor.combiner")
    running = {"small": small, "large": large, "combiner": combiner}
    try:
        for server in running.values():
            server.wait_ready()
        yield running
    finally:
        for server in running.values():
            server.stop()


@pytest.fixture(scope="module")
def resolve(members):
    """serviceName -> URL, as GetPredictorEndpoint resolves it: the first protocol of the runtime (v1),
    the --model_name of a custom container (the combiner)."""
    urls = {
        "small-image-classifier": members["small"].v1_url,
        "large-image-classifier": members["large"].v1_url,
        "ensemble-combiner": members["combiner"].base_url + "/v1/models/combiner:predict",
    }
    return urls.__getitem__


def test_the_recorded_responses_are_what_the_predictor_answers(members):
    small = members["small"]
    for name, body in RECORDINGS.items():
        r = small.post_v1(body)
        if os.environ.get("GRAPH_RECORD"):
            (RECORDED / f"{name}.json").write_text(json.dumps({"status": r.status_code, "body": r.json()}, indent=1))
        record = recorded(name)
        assert r.status_code == record["status"], name
        live, kept = r.json(), record["body"]
        if "predictions" not in kept:
            assert live == kept, name
            continue
        for got, want in zip(live["predictions"], kept["predictions"], strict=True):
            assert got["class_names"] == want["class_names"], name
            np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-4, atol=1e-6)


def test_the_cascade_answers_from_the_small_model_when_it_is_sure(members, resolve):
    router = Router(_graph("cascade")["spec"], resolve)
    body = to_json(RECORDINGS["v1-coffee"])
    answer = router(body)
    assert answer.status == 200 and router.calls == ["small"]
    assert answer.json() == members["small"].post_v1(RECORDINGS["v1-coffee"]).json()


@pytest.mark.parametrize("recording", ["v1-chelsea", "v1-coffee-chelsea"])
def test_the_cascade_asks_the_large_model_when_any_image_is_unsure(members, resolve, recording):
    router = Router(_graph("cascade")["spec"], resolve)
    answer = router(to_json(RECORDINGS[recording]))
    assert answer.status == 200 and router.calls == ["small", "large"]
    # The large model's own answer to the client's request (data: $request), not to the small one's.
    assert answer.json() == members["large"].post_v1(RECORDINGS[recording]).json()
    assert answer.json() != members["small"].post_v1(RECORDINGS[recording]).json()


def test_a_failing_first_step_is_the_graphs_answer_with_its_status(resolve):
    router = Router(_graph("cascade")["spec"], resolve)
    answer = router(to_json(RECORDINGS["v1-error-tiff"]))
    assert answer.status == 400 and router.calls == ["small"]
    assert "TIFF is not supported" in answer.json()["error"]
    # Soft, the same failure would come back as a 200 whose body is an error: why the lint insists.
    soft = _graph("cascade")["spec"]
    soft["nodes"]["root"]["steps"][0]["dependency"] = "Soft"
    answer = Router(soft, resolve)(to_json(RECORDINGS["v1-error-tiff"]))
    assert answer.status == 200 and "error" in answer.json()


def test_the_ensemble_averages_both_members_probabilities(members, resolve):
    # Every class from both members: the average is then exact.
    request = v1_body(jpeg("chelsea"), jpeg("coffee"), top_k=1000)
    router = Router(_graph("ensemble")["spec"], resolve)
    answer = router(to_json(request))
    assert answer.status == 200, answer.body[:500]
    assert sorted(router.calls) == ["average", "large", "small"]
    small, large = (members[m].post_v1(request).json()["predictions"] for m in ("small", "large"))
    combined = answer.json()["predictions"]
    assert len(combined) == 2
    for got, a, b in zip(combined, small, large, strict=True):
        by_class = {i: p / 2 for i, p in zip(a["class_indices"], a["probabilities"], strict=True)}
        for i, p in zip(b["class_indices"], b["probabilities"], strict=True):
            by_class[i] += p / 2
        expected = sorted(by_class.items(), key=lambda item: -item[1])[:5]
        assert got["class_indices"] == [i for i, _ in expected]
        np.testing.assert_allclose(got["probabilities"], [p for _, p in expected], rtol=1e-6)
        assert got["class_names"][0] == a["class_names"][a["class_indices"].index(got["class_indices"][0])]


def test_the_splitter_sends_each_request_to_one_member_by_weight(members):
    spec = _graph("splitter")["spec"]
    urls = {"image-classifier": members["small"].v1_url, "candidate-image-classifier": members["large"].v1_url}
    router = Router(spec, urls.__getitem__)
    for _ in range(10):
        assert router(to_json(RECORDINGS["v1-coffee"])).status == 200
    assert router.calls == ["stable"] * 10  # the candidate's weight is 0 until a graph canary moves it
    spec["nodes"]["root"]["steps"][0]["weight"], spec["nodes"]["root"]["steps"][1]["weight"] = 0, 100
    assert (
        Router(spec, urls.__getitem__)(to_json(RECORDINGS["v1-coffee"])).json()
        == members["large"].post_v1(RECORDINGS["v1-coffee"]).json()
    )
