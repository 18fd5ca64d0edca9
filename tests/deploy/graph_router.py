"""KServe's InferenceGraph router, rebuilt from its code (kserve/kserve cmd/router/main.go, at the
commit in tests/deploy/crds/README.md) so that the graph examples run against real processes here.

Each function names the Go function it follows. Conditions are evaluated with gjson-py, a Python
implementation of the GJSON path syntax the router uses (tidwall/gjson): a path that finds nothing
is `Exists() == false`. The router is a Go binary that only a cluster runs; everything it calls
in the tests is real (predictors, the combiner), over HTTP/1.1 JSON POSTs as the router sends them.

Also here: `lint`, the rules a graph must keep beyond what the webhook checks.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gjson
import httpx

# serviceName -> the URL the controller resolves it to (GetPredictorEndpoint): the test's processes.
Resolver = Callable[[str], str]


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def exists(document: bytes, path: str) -> bool:
    """gjson.GetBytes(document, path).Exists(), after gjson.ValidBytes (pickupRouteByCondition)."""
    try:
        parsed = json.loads(document)
    except ValueError:
        return False
    try:
        gjson.get(parsed, path)
    except gjson.GJSONError:
        return False  # gjson-py raises where GJSON answers "does not exist"
    return True


def _is_successful(status: int) -> bool:
    """isSuccessFul."""
    return 200 <= status <= 299


class Router:
    def __init__(self, spec: Mapping[str, Any], resolve: Resolver, timeout_s: float = 60.0) -> None:
        self.nodes = spec["nodes"]
        self.resolve = resolve
        self.timeout_s = timeout_s
        self.calls: list[str] = []  # the services called, in order: what a test asserts on

    def __call__(self, request: bytes) -> Answer:
        """The router's HTTP handler: the graph's root node, with the client's body."""
        return self.route_step("root", request)

    def _call_service(self, step: Mapping[str, Any], request: bytes) -> Answer:
        """callService: POST the JSON, status and body back as they are."""
        url = step.get("serviceUrl") or self.resolve(step["serviceName"])
        self.calls.append(step.get("name") or url)
        r = httpx.post(url, content=request, headers={"content-type": "application/json"}, timeout=self.timeout_s)
        return Answer(r.status_code, r.content)

    def _execute_step(self, step: Mapping[str, Any], request: bytes) -> Answer:
        """executeStep: a node by name, else the service."""
        if step.get("nodeName"):
            return self.route_step(step["nodeName"], request)
        return self._call_service(step, request)

    def route_step(self, node_name: str, request: bytes) -> Answer:
        """routeStep, for each router type."""
        node = self.nodes[node_name]
        steps = node.get("steps") or []
        kind = node["routerType"]
        if kind == "Splitter":
            return self._execute_step(self._pick_by_weight(steps), request)
        if kind == "Switch":
            route = next((s for s in steps if exists(request, s.get("condition", ""))), None)
            if route is None:
                return Answer(404, b'{"error": "None of the routes matched with the switch condition"}')
            return self._execute_step(route, request)
        if kind == "Ensemble":
            return self._ensemble(steps, request)
        if kind == "Sequence":
            return self._sequence(steps, request)
        return Answer(500, json.dumps({"error": f"invalid route type: {kind}"}).encode())

    def _pick_by_weight(self, steps: list[Mapping[str, Any]]) -> Mapping[str, Any]:
        """pickupRoute: a point in [0, 100), the first step whose cumulative weight passes it."""
        point, end = random.randrange(100), 0
        for step in steps:
            end += int(step["weight"])
            if point < end:
                return step
        raise AssertionError("no route was selected by the splitter")

    def _ensemble(self, steps: list[Mapping[str, Any]], request: bytes) -> Answer:
        """The Ensemble branch: every step at once; {step name or index: response}; the first Hard
        step that failed decides the answer instead."""
        with ThreadPoolExecutor(len(steps)) as pool:
            answers = list(pool.map(lambda s: self._execute_step(s, request), steps))
        combined = {}
        for i, (step, answer) in enumerate(zip(steps, answers, strict=True)):
            if not _is_successful(answer.status) and step.get("dependency") == "Hard":
                return answer
            combined[step.get("name") or str(i)] = answer.json()
        return Answer(200, json.dumps(combined).encode())

    def _sequence(self, steps: list[Mapping[str, Any]], request: bytes) -> Answer:
        """The Sequence branch: `data: $response` sends the previous answer; a condition is tested on
        the previous answer and, unmatched, that answer is returned with 200; a Hard step that
        fails ends the sequence with its own status."""
        previous: Answer | None = None
        for i, step in enumerate(steps):
            body = previous.body if step.get("data") == "$response" and i > 0 and previous else request
            if step.get("condition"):
                document = previous.body if previous else b""
                try:
                    json.loads(document)
                except ValueError:
                    return Answer(500, b'{"error": "invalid response"}')
                if not exists(document, step["condition"]):
                    return Answer(200, document)
            previous = self._execute_step(step, body)
            if step.get("dependency") == "Hard" and not _is_successful(previous.status):
                return previous
        assert previous is not None
        return previous


def lint(graph: Mapping[str, Any]) -> list[str]:
    """What the webhook lets through but a graph must not do: in a Sequence, a step before a
    conditioned step must be Hard (a Soft step's error body would be tested, and returned with 200
    when the condition does not match); so must be a step whose answer a `$response` step consumes.
    A Sequence's first step is therefore Hard in every cascade."""
    problems = []
    name = graph["metadata"]["name"]
    for node_name, node in graph["spec"]["nodes"].items():
        if node["routerType"] != "Sequence":
            continue
        steps = node.get("steps") or []
        for i, step in enumerate(steps[1:], start=1):
            before = steps[i - 1]
            if (step.get("condition") or step.get("data") == "$response") and before.get("dependency") != "Hard":
                why = "its condition" if step.get("condition") else "its $response input"
                problems.append(
                    f"InferenceGraph {name}: node {node_name!r} step {before.get('name') or i - 1!r} must be Hard: "
                    f"step {step.get('name') or i!r} reads its answer ({why}), and a Soft failure's error body "
                    "would be read as a classification"
                )
    return problems


# Real responses of the cascade's first member, recorded from the real predictor (tests/test_graphs.py
# checks they still are what it answers): what the conditions are evaluated on.
RECORDED = Path(__file__).resolve().parent / "recorded"


def recorded(name: str) -> dict[str, Any]:
    """{"status": ..., "body": ...} of one recording."""
    return json.loads((RECORDED / f"{name}.json").read_text())
