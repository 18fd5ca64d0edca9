"""`isvctl graph-canary`: a Splitter's weights moved step by step, the router rolled out at each, each
InferenceService gated on its own metrics, and all traffic back to the stable step when a gate fails.

The cluster is the graph example (inferenceservices/graphs/splitter.yaml) as KServe's controller
serves it (kserve_sim: the router Deployment with --graph-json, PropagateRawStatus) and the two
InferenceServices as the Standard-mode stories report them (scenes.StandardStory).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from typing import Any

import pytest

from isvctl import cli
from isvctl.gates import Thresholds
from isvctl.graph import MemberGate

from . import kserve_sim
from .conftest import MANIFESTS, REPO_ROOT, FakeClock, isvctl, kustomize
from .scenes import NS, StandardStory, merge

GRAPH, STABLE, CANDIDATE = "canary-split", "image-classifier", "candidate-image-classifier"
URLS = {STABLE: f"http://{STABLE}.{NS}.svc", CANDIDATE: f"http://{CANDIDATE}.{NS}.svc"}


def _member(name: str, ready: bool = True) -> dict[str, Any]:
    doc = next(d for d in StandardStory("gpu").moment() if d["kind"] == "InferenceService")
    doc["metadata"]["name"] = name
    if not ready:
        doc["status"]["conditions"] = [
            {**c, "status": "False"} if c["type"] in ("Ready", "PredictorReady") else c
            for c in doc["status"]["conditions"]
        ]
    return doc


class GraphCluster:
    """The graph, its router and the members. A patch of the graph is reconciled at once: the
    controller writes the router's new template (a new Deployment generation), which the next GET
    after that shows rolled out."""

    def __init__(self, members: dict[str, dict[str, Any]] | None = None, rolls_out: bool = True):
        graph = next(o for o in kustomize(MANIFESTS / "graphs") if o["metadata"]["name"] == GRAPH)
        graph["metadata"].update(namespace=NS, generation=1)
        self.graph = graph
        self.members = members or {STABLE: _member(STABLE), CANDIDATE: _member(CANDIDATE)}
        self.router = kserve_sim.graph_router_deployment(graph, URLS)
        self.rolls_out = rolls_out
        self.patches: list[dict[str, Any]] = []
        self.router_gets = 0

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        if kind == "InferenceGraph" and name == GRAPH:
            return {**copy.deepcopy(self.graph), "status": kserve_sim.graph_status(self.router, f"http://{GRAPH}")}
        if kind == "Deployment" and name == GRAPH:
            self.router_gets += 1
            doc = copy.deepcopy(self.router)
            if self.rolls_out:  # the Deployment controller catches up with the new template
                self.router = kserve_sim.graph_router_deployment(
                    self.graph, URLS, generation=self.router["metadata"]["generation"]
                )
            return doc
        if kind == "InferenceService":
            return copy.deepcopy(self.members.get(name))
        return None

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return []

    def patch(self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        assert kind == "InferenceGraph" and name == GRAPH, (kind, name)
        self.patches.append(patch)
        self.graph = merge(self.graph, patch)
        self.graph["metadata"]["generation"] += 1
        # The controller's reconcile: the new --graph-json, a new Deployment generation not yet observed.
        written = kserve_sim.graph_router_deployment(
            self.graph, URLS, generation=self.router["metadata"]["generation"] + 1
        )
        written["status"] = {**self.router["status"], "updatedReplicas": 0}
        self.router = written
        return copy.deepcopy(self.graph)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("a graph canary only patches")

    def delete(self, obj: dict[str, Any]) -> bool:
        raise AssertionError("a graph canary only patches")

    def events(self, namespace: str, names: list[str], limit: int = 10) -> list[str]:
        return []

    def weights(self) -> dict[str, int]:
        return {s["name"]: s["weight"] for s in self.graph["spec"]["nodes"]["root"]["steps"]}


class FakePrometheus:
    """Answers the gate's PromQL per InferenceService (its isvc label), recording each query."""

    def __init__(self, error_ratio: dict[str, float], p99_s: float = 0.1):
        self.error_ratio = error_ratio
        self.p99_s = p99_s
        self.queries: list[str] = []

    def query(self, promql: str) -> float | None:
        self.queries.append(promql)
        isvc = re.search(r'isvc="([^"]+)"', promql).group(1)
        return self.error_ratio[isvc] if promql.startswith("sum(rate(") else self.p99_s


def graph_canary(capsys, cluster, *args, gate=None, code=0):
    argv = [
        "graph-canary",
        "--graph",
        GRAPH,
        "--canary-step",
        "candidate",
        "--bake-time-s",
        "60",
        "--gate-interval-s",
        "30",
    ]
    result = cli.main(
        [*argv, *args, "--poll-s", "5"],
        cluster_factory=lambda: cluster,
        clock=FakeClock(),
        graph_gate=gate,
    )
    out = capsys.readouterr()
    assert result == code, out.err or out.out
    return out.out, out.err


def test_the_dry_run_prints_every_patch_and_sends_none(capsys):
    cluster = GraphCluster()
    out, _ = graph_canary(capsys, cluster, "--steps", "10,50,100", "--dry-run")
    assert cluster.patches == []
    assert out.startswith("# DRY RUN: graph canary; nothing is sent to the cluster")
    assert "candidate (candidate-image-classifier) against stable (image-classifier)" in out
    assert "# weights now: stable 100%, candidate 0%" in out
    bodies = [json.loads(b) for b in re.findall(r"\(application/merge-patch\+json\)\n(\{.*?\n\})", out, re.S)]
    steps = [{s["name"]: s["weight"] for s in b["spec"]["nodes"]["root"]["steps"]} for b in bodies]
    assert steps == [
        {"stable": 90, "candidate": 10},
        {"stable": 50, "candidate": 50},
        {"stable": 0, "candidate": 100},
        {"stable": 100, "candidate": 0},  # the rollback
    ]
    # Each patch carries the whole step, as a merge patch replaces lists.
    assert bodies[0]["spec"]["nodes"]["root"]["steps"][1]["serviceName"] == CANDIDATE
    assert "each InferenceService's readiness (PROMETHEUS_URL not set)" in out


def test_every_step_waits_for_the_router_and_gates_each_member_on_its_own_metrics(capsys):
    cluster = GraphCluster()
    prometheus = FakePrometheus({STABLE: 0.0, CANDIDATE: 0.001})
    out, _ = graph_canary(capsys, cluster, "--steps", "10,50,100", gate=MemberGate(prometheus, Thresholds()))
    assert cluster.weights() == {"stable": 0, "candidate": 100}
    assert [p["spec"]["nodes"]["root"]["steps"][1]["weight"] for p in cluster.patches] == [10, 50, 100]
    assert out.count("  … router Deployment canary-split has weights") == 0  # the template came at once
    assert out.count("  ✓ deployment 'canary-split' successfully rolled out") == 3
    selectors = {re.search(r"\{([^}]*)\}", q).group(1) for q in prometheus.queries}
    assert {
        f'namespace="{NS}", isvc="{CANDIDATE}", status=~"error|timeout"',
        f'namespace="{NS}", isvc="{STABLE}"',
    } <= selectors
    # Two bake intervals per step, each member read twice (errors, p99) per interval.
    assert len(prometheus.queries) == 3 * 2 * 2 * 2
    assert "stable 0%, candidate 100%" in out.splitlines()[-1]


def test_a_failing_gate_sends_all_traffic_back_to_the_stable_step(capsys):
    cluster = GraphCluster()
    prometheus = FakePrometheus({STABLE: 0.0, CANDIDATE: 0.2})
    _, err = graph_canary(capsys, cluster, "--steps", "10,50,100", gate=MemberGate(prometheus, Thresholds()), code=1)
    assert "graph canary gate failed at 10%: candidate-image-classifier: error ratio 0.2000 (max 0.0100)" in err
    assert "rolled back: stable 100%, candidate 0%" in err
    assert cluster.weights() == {"stable": 100, "candidate": 0}
    assert [p["spec"]["nodes"]["root"]["steps"][1]["weight"] for p in cluster.patches] == [10, 0]


def test_a_member_that_is_not_ready_fails_the_gate(capsys):
    cluster = GraphCluster({STABLE: _member(STABLE), CANDIDATE: _member(CANDIDATE, ready=False)})
    _, err = graph_canary(capsys, cluster, "--percent", "10", code=1)
    assert "candidate-image-classifier is not ready" in err
    assert cluster.weights() == {"stable": 100, "candidate": 0}


def test_a_router_that_never_rolls_out_is_rolled_back_when_the_time_is_up(capsys):
    cluster = GraphCluster(rolls_out=False)
    _, err = graph_canary(capsys, cluster, "--percent", "10", "--timeout-s", "20", code=1)
    assert "canary-split: timed out after 20 s" in err
    assert "the rollback did not finish" in err  # it cannot roll out either: said, not hidden


@pytest.mark.parametrize(
    "change, message",
    [
        ({"routerType": "Sequence"}, "node 'root' of canary-split is a Sequence, not a Splitter"),
        ({"steps": [{"name": "stable", "serviceName": STABLE, "weight": 100}]}, "has 1 step(s) named ['stable']"),
    ],
)
def test_what_is_not_a_two_way_splitter_is_refused(capsys, change, message):
    cluster = GraphCluster()
    cluster.graph["spec"]["nodes"]["root"].update(change)
    _, err = graph_canary(capsys, cluster, "--percent", "10", code=1)
    assert message in err and cluster.patches == []


def test_an_unknown_step_or_graph_is_refused_with_what_there_is(capsys):
    out, err = isvctl(capsys, ["graph-canary", "--graph", GRAPH, "--canary-step", "candidat"], GraphCluster(), code=1)
    assert "has no step 'candidat': GRAPH_CANARY_STEP is one of ['stable', 'candidate']" in err
    _, err = isvctl(capsys, ["graph-canary", "--graph", "nope", "--canary-step", "candidate"], GraphCluster(), code=1)
    assert f"no InferenceGraph {NS}/nope" in err


def test_graph_rollback_moves_all_traffic_at_once(capsys):
    cluster = GraphCluster()
    cluster.graph["spec"]["nodes"]["root"]["steps"][0]["weight"] = 50
    cluster.graph["spec"]["nodes"]["root"]["steps"][1]["weight"] = 50
    out, _ = isvctl(capsys, ["graph-rollback", "--graph", GRAPH, "--canary-step", "candidate"], cluster)
    assert cluster.weights() == {"stable": 100, "candidate": 0}
    assert "rolled back: stable 100%, candidate 0%" in out


def test_make_graph_canary_passes_its_variables_to_isvctl():
    done = subprocess.run(
        [
            "make",
            "-n",
            "graph-canary",
            "GRAPH=canary-split",
            "GRAPH_CANARY_STEP=candidate",
            "CANARY_STEPS=10,50,100",
            "DRY_RUN=1",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in done.stdout.replace("\\\n", " ").splitlines() if "/isvctl graph-canary" in line)
    for expected in (
        "--graph 'canary-split'",
        "--node 'root'",
        "--canary-step 'candidate'",
        "--steps '10,50,100'",
        "--dry-run='1'",
    ):
        assert expected in line


def test_the_deployer_may_read_and_patch_graphs():
    role = next(o for o in kustomize(MANIFESTS / "graphs") if o["kind"] == "Role")
    (rule,) = [r for r in role["rules"] if "inferencegraphs" in r["resources"]]
    assert {"get", "patch"} <= set(rule["verbs"]) and "delete" not in rule["verbs"]
