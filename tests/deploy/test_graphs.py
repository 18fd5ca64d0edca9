"""The InferenceGraph examples (inferenceservices/graphs/): valid against the CRD, admitted by the
webhook, clear of what the webhook lets through but the router gets wrong, and every condition
evaluated on real responses. tests/test_graphs.py runs them against real processes."""

from __future__ import annotations

import copy
import json

import kubernetes_validate
import pytest

from . import admission, crd_schema
from .conftest import MANIFESTS, RUNTIME_IMAGE, kustomize
from .graph_router import exists, lint, recorded
from .test_schemas import CORE_KINDS, KUBERNETES_VERSION


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return kustomize(MANIFESTS / "graphs")


def _graphs(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "InferenceGraph"}


def test_the_examples_are_a_cascade_an_ensemble_with_its_combiner_and_a_splitter(objects):
    graphs = _graphs(objects)
    assert set(graphs) == {"cascade", "ensemble", "canary-split"}
    types = {name: {n["routerType"] for n in g["spec"]["nodes"].values()} for name, g in graphs.items()}
    assert types == {"cascade": {"Sequence"}, "ensemble": {"Sequence", "Ensemble"}, "canary-split": {"Splitter"}}
    combiner = next(o for o in objects if o["kind"] == "InferenceService")
    (container,) = combiner["spec"]["predictor"]["containers"]
    assert container["command"] == ["python", "-m", "predictor.combiner"]
    assert container["image"] == RUNTIME_IMAGE  # the runtime's, named once
    assert not [o for o in objects if o["kind"] == "ServingRuntime"], "the runtime is a source, not applied"


def test_every_object_is_valid_against_its_schema(objects):
    for obj in objects:
        if obj["kind"] in CORE_KINDS:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        else:
            assert crd_schema.errors(obj) == [], obj["metadata"]["name"]


def test_the_webhooks_admit_every_object(objects):
    assert [str(d) for d in admission.admit(objects, default_mode="Standard")] == []


def test_the_webhook_refuses_what_it_exists_for(objects):
    splitter = copy.deepcopy(_graphs(objects)["canary-split"])
    splitter["spec"]["nodes"]["root"]["steps"][1]["weight"] = 10
    cascade = copy.deepcopy(_graphs(objects)["cascade"])
    cascade["spec"]["nodes"]["root"]["steps"][1]["name"] = "small"
    messages = [d.message for d in admission.admit([splitter, cascade])]
    assert messages == [
        "InferenceGraph[canary-split] Node[root] splitter node: the sum of traffic weights for all routing "
        "targets should be 100",
        'Node "root" of InferenceGraph "cascade" contains more than one step with name "small"',
    ]


def test_no_step_whose_answer_is_read_is_soft(objects):
    for graph in _graphs(objects).values():
        assert lint(graph) == []
    cascade = copy.deepcopy(_graphs(objects)["cascade"])
    first = cascade["spec"]["nodes"]["root"]["steps"][0]
    del first["dependency"]  # KServe's default is Soft
    (problem,) = lint(cascade)
    assert "node 'root' step 'small' must be Hard" in problem


def test_every_cascade_starts_with_a_hard_step(objects):
    for graph in _graphs(objects).values():
        for node in graph["spec"]["nodes"].values():
            steps = node.get("steps") or []
            if node["routerType"] == "Sequence" and any(s.get("condition") for s in steps):
                assert steps[0]["dependency"] == "Hard", graph["metadata"]["name"]


def _conditions(objects: list[dict]) -> list[str]:
    return [
        step["condition"]
        for graph in _graphs(objects).values()
        for node in graph["spec"]["nodes"].values()
        for step in node.get("steps") or []
        if step.get("condition")
    ]


@pytest.mark.parametrize(
    "recording, matches",
    [
        ("v1-coffee", False),  # top-1 0.95: the small model's answer stands
        ("v1-chelsea", True),  # top-1 0.37: ask the large model
        ("v1-coffee-chelsea", True),  # any unsure image sends the whole request on
        ("v1-error-tiff", False),  # an error body never matches: with a Soft step it would be returned as 200
    ],
)
def test_the_cascade_condition_on_real_responses(objects, recording, matches):
    (condition,) = _conditions(objects)
    body = recorded(recording)["body"]
    assert exists(json.dumps(body).encode(), condition) is matches


def test_the_condition_reads_the_top_probability_of_each_image(objects):
    (condition,) = _conditions(objects)
    assert condition.startswith("predictions.#.probabilities.0|")
    threshold = float(condition.rsplit("<", 1)[1].rstrip(")"))
    body = recorded("v1-coffee")["body"]
    assert (
        body["predictions"][0]["probabilities"][0]
        >= threshold
        > recorded("v1-chelsea")["body"]["predictions"][0]["probabilities"][0]
    )
