"""A canary between two InferenceServices behind an InferenceGraph Splitter: move the weights step by
step, bake each step with a gate on each InferenceService's own metrics, roll back on failure.

    step(w₁) ─▶ router rolled out ─▶ bake: gate every interval ─all pass─▶ step(w₂) … ─▶ 100 % on the canary
                     │                      └─first failing window─▶ rollback: 0 % on the canary
                     └─router does not roll out in time─▶ rollback

KServe's graph router reads the graph from its own arguments: the controller writes the whole spec,
service URLs resolved, into `--graph-json` of the router's Deployment (Standard mode) or Knative
Service, named after the graph (createInferenceGraphPodSpec, constructForRawDeployment, kserve/kserve
pkg/controller/v1alpha1/inferencegraph/raw_ig.go; createKnativeService, knative_reconciler.go). A
weight change takes effect once that workload has rolled out with the new spec, which is what the
waits check; the webhook requires the Splitter's weights to sum to 100
(validateInferenceGraphSplitterWeight), which every patch here keeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from . import isvc, workload
from .clock import Clock
from .cluster import Cluster
from .errors import DeployError, GateFailed, RolloutFailed
from .gates import MetricsSource, Thresholds, Verdict, bake, error_ratio_query, judge, p99_latency_query
from .progress import Phase, Progress, done, wait

API_VERSION = "serving.kserve.io/v1alpha1"
KIND = "InferenceGraph"
GRAPH_JSON_ARG = "--graph-json"
Weights = dict[str, int]  # step name -> weight


@dataclass(frozen=True)
class Split:
    """The Splitter node a canary moves: its steps (each naming one InferenceService) and weights."""

    namespace: str
    graph: str
    node: str
    steps: tuple[dict[str, Any], ...]
    canary: str  # the step that takes the new traffic
    mode: isvc.Mode | None

    @property
    def weights(self) -> Weights:
        return {s["name"]: int(s.get("weight") or 0) for s in self.steps}

    @property
    def stable(self) -> str:
        return next(cast(str, s["name"]) for s in self.steps if s["name"] != self.canary)

    def service(self, step: str) -> str:
        return str(next(s["serviceName"] for s in self.steps if s["name"] == step))

    def with_canary_at(self, percent: int) -> Weights:
        """Both steps' weights, in the graph's order, summing to 100 as the webhook requires."""
        return {s["name"]: percent if s["name"] == self.canary else 100 - percent for s in self.steps}

    def patch(self, weights: Weights) -> dict[str, Any]:
        """A JSON merge patch: the node's whole steps list (a merge patch replaces lists), new weights."""
        steps = [{**s, "weight": weights[s["name"]]} for s in self.steps]
        return {"spec": {"nodes": {self.node: {"steps": steps}}}}


def read_split(doc: dict[str, Any] | None, namespace: str, graph: str, node: str, canary: str) -> Split:
    if doc is None:
        raise DeployError(f"no InferenceGraph {namespace}/{graph}: apply it first (inferenceservices/graphs)")
    nodes = (doc.get("spec") or {}).get("nodes") or {}
    if node not in nodes:
        raise DeployError(f"InferenceGraph {graph} has no node {node!r} (has {', '.join(sorted(nodes))})")
    router = nodes[node]
    if router.get("routerType") != "Splitter":
        raise DeployError(f"node {node!r} of {graph} is a {router.get('routerType')}, not a Splitter")
    steps = tuple(router.get("steps") or [])
    names = [s.get("name") for s in steps]
    if len(steps) != 2 or not all(names) or not all(s.get("serviceName") for s in steps):
        raise DeployError(
            f"a graph canary moves traffic between two named steps that each name an InferenceService "
            f"(serviceName); node {node!r} of {graph} has {len(steps)} step(s) named {names}"
        )
    if canary not in names:
        raise DeployError(f"node {node!r} of {graph} has no step {canary!r}: GRAPH_CANARY_STEP is one of {names}")
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    mode = isvc.parse_mode(
        (doc.get("status") or {}).get("deploymentMode") or annotations.get(isvc.DEPLOYMENT_MODE_ANNOTATION)
    )
    return Split(namespace, graph, node, steps, canary, mode)


# ----------------------------------------------------------------------------- what the cluster shows


def _graph_json(containers: list[dict[str, Any]]) -> dict[str, Any] | None:
    for container in containers:
        args = container.get("args") or []
        if GRAPH_JSON_ARG in args[:-1]:
            parsed = json.loads(args[args.index(GRAPH_JSON_ARG) + 1])
            return parsed if isinstance(parsed, dict) else None
    return None


def router_weights(spec: dict[str, Any] | None, node: str) -> Weights | None:
    """The weights a router was started with, from its --graph-json."""
    if spec is None or node not in (spec.get("nodes") or {}):
        return None
    return {s.get("name", ""): int(s.get("weight") or 0) for s in spec["nodes"][node].get("steps") or []}


def router_rolled_out(cluster: Cluster, split: Split, weights: Weights) -> Progress:
    """Whether the router serving `split.graph` now runs with `weights` everywhere."""
    deployment = cluster.get("apps/v1", "Deployment", split.namespace, split.graph)
    if deployment is not None:
        template = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
        running = router_weights(_graph_json(template.get("containers") or []), split.node)
        if running != weights:
            return wait(f"router Deployment {split.graph} has weights {running}, not yet {weights}")
        return workload.rollout_status(workload.deployment(deployment))
    ksvc = cluster.get(workload.KNATIVE_API_VERSION, "Service", split.namespace, split.graph)
    if ksvc is None:
        return wait(f"no router for {split.graph} yet (neither a Deployment nor a Knative Service of that name)")
    template = ((ksvc.get("spec") or {}).get("template") or {}).get("spec") or {}
    running = router_weights(_graph_json(template.get("containers") or []), split.node)
    status = workload.knative_service(ksvc)
    if running != weights:
        return wait(f"router Knative Service {split.graph} has weights {running}, not yet {weights}")
    if status.observed_generation < status.generation or status.latest_ready != status.latest_created:
        return wait(f"router revision {status.latest_created} is not ready yet")
    return done(f"router revision {status.latest_ready} routes {weights}")


# ----------------------------------------------------------------------------- gates


class MemberGate:
    """Every InferenceService the Splitter routes to must be Ready and, with Prometheus, within the
    thresholds on its own metrics (the predictor's, selected by its isvc label)."""

    def __init__(self, source: MetricsSource | None, limits: Thresholds) -> None:
        self._source = source
        self._limits = limits

    def describe(self) -> str:
        if self._source is None:
            return "each InferenceService's readiness (PROMETHEUS_URL not set)"
        return (
            f"each InferenceService's readiness, error ratio <= {self._limits.max_error_ratio} and "
            f"p99 <= {self._limits.max_p99_latency_s * 1000:.0f} ms on its own metrics (Prometheus)"
        )

    def check(self, cluster: Cluster, split: Split, window_s: float) -> Verdict:
        facts, failures = [], []
        for step in (split.canary, split.stable):
            name = split.service(step)
            doc = cluster.get(isvc.API_VERSION, isvc.KIND, split.namespace, name)
            state = isvc.parse(doc) if doc else None
            if state is None or not state.ready:
                failures.append(f"{name} is not ready")
                continue
            if self._source is None:
                facts.append(f"{name} ready")
                continue
            selector = f'namespace="{split.namespace}", isvc="{name}"'
            try:
                verdict = judge(
                    self._source.query(error_ratio_query(selector, window_s)),
                    self._source.query(p99_latency_query(selector, window_s)),
                    self._limits,
                )
            except DeployError as exc:
                verdict = Verdict(False, f"cannot read its metrics: {exc}")
            (facts if verdict.passed else failures).append(f"{name}: {verdict.summary}")
        if failures:
            return Verdict(False, "; ".join(failures))
        return Verdict(True, "; ".join(facts))


# ----------------------------------------------------------------------------- the canary


@dataclass(frozen=True)
class GraphCanaryPlan:
    steps_percent: tuple[int, ...]
    bake_time_s: float
    gate_interval_s: float
    timeout_s: float
    poll_s: float = 5.0


@dataclass
class GraphOps:
    cluster: Cluster
    clock: Clock
    say: Callable[[str], None]
    timeout_s: float
    poll_s: float

    def read(self, namespace: str, graph: str, node: str, canary: str) -> Split:
        doc = self.cluster.get(API_VERSION, KIND, namespace, graph)
        return read_split(doc, namespace, graph, node, canary)

    def set_weights(self, split: Split, weights: Weights) -> None:
        self.say(f"  weights of {split.graph}/{split.node}: {_describe(weights)}")
        self.cluster.patch(API_VERSION, KIND, split.namespace, split.graph, split.patch(weights))
        self._wait(split, weights)

    def _wait(self, split: Split, weights: Weights) -> None:
        start_s, last = self.clock.now_s(), None
        while True:
            progress = router_rolled_out(self.cluster, split, weights)
            if progress.phase is Phase.DONE:
                self.say(f"  ✓ {progress.detail}")
                return
            if progress.phase is Phase.FAILED:
                raise RolloutFailed(f"{split.namespace}/{split.graph}: {progress.detail}")
            if progress.detail != last:
                self.say(f"  … {progress.detail}")
                last = progress.detail
            if self.clock.now_s() - start_s >= self.timeout_s:
                raise RolloutFailed(
                    f"{split.namespace}/{split.graph}: timed out after {self.timeout_s:.0f} s: {progress.detail}"
                )
            self.clock.sleep(self.poll_s)

    def rollback(self, split: Split) -> str:
        weights = split.with_canary_at(0)
        self.say(f"rollback: all of {split.graph}'s traffic to {split.stable} ({split.service(split.stable)})")
        self.set_weights(split, weights)
        return f"rolled back: {_describe(weights)}"


def _describe(weights: Weights) -> str:
    return ", ".join(f"{step} {weight}%" for step, weight in weights.items())


def patch_text(split: Split, weights: Weights) -> str:
    """A patch exactly as sent."""
    body = json.dumps(split.patch(weights), indent=2, sort_keys=True)
    return f"PATCH {API_VERSION} {KIND} {split.namespace}/{split.graph} (application/merge-patch+json)\n{body}"


def describe(split: Split, plan: GraphCanaryPlan, gate: MemberGate) -> list[str]:
    """What `run` would send, in order: the dry-run output."""
    lines = [
        f"# graph canary of {split.namespace}/{split.graph}, Splitter node {split.node!r}: "
        f"{split.canary} ({split.service(split.canary)}) against {split.stable} ({split.service(split.stable)})",
        f"# weights now: {_describe(split.weights)}",
    ]
    for i, percent in enumerate(plan.steps_percent, 1):
        lines.append(f"# step {i}/{len(plan.steps_percent)}: {percent}% to {split.canary}")
        lines.append(patch_text(split, split.with_canary_at(percent)))
        lines.append(
            f"# then wait up to {plan.timeout_s:.0f} s for the router to roll out, bake {plan.bake_time_s:.0f} s "
            f"checking {gate.describe()} every {plan.gate_interval_s:.0f} s"
        )
    lines.append("# if a step fails: roll back")
    lines.append(patch_text(split, split.with_canary_at(0)))
    return lines


def run(ops: GraphOps, split: Split, plan: GraphCanaryPlan, gate: MemberGate) -> Weights:
    say = ops.say
    say(
        f"graph canary of {split.namespace}/{split.graph}: {split.canary} ({split.service(split.canary)}) "
        f"takes traffic from {split.stable} ({split.service(split.stable)})"
    )
    weights = split.weights
    for i, percent in enumerate(plan.steps_percent, 1):
        say(f"step {i}/{len(plan.steps_percent)}: {percent}% to {split.canary}")
        weights = split.with_canary_at(percent)
        try:
            ops.set_weights(split, weights)
        except RolloutFailed as exc:
            raise RolloutFailed(f"{exc}\n{_rollback_or_explain(ops, split)}") from None
        verdict = bake(
            ops.clock,
            ops.say,
            plan.bake_time_s,
            plan.gate_interval_s,
            lambda: gate.check(ops.cluster, split, plan.gate_interval_s),
        )
        if verdict is not None:
            raise GateFailed(f"graph canary gate failed at {percent}%: {verdict}\n{_rollback_or_explain(ops, split)}")
    say(f"{split.graph}: {_describe(weights)}")
    return weights


def _rollback_or_explain(ops: GraphOps, split: Split) -> str:
    try:
        return ops.rollback(split)
    except DeployError as exc:
        return f"the rollback did not finish: {exc}"


def check_ready_to_start(split: Split) -> None:
    if split.weights[split.canary] == 100:
        raise DeployError(f"{split.canary} already takes all of {split.graph}'s traffic: nothing to move")
