"""isvctl: deploy, canary, promote, roll back and scale the image classifier's InferenceService.

`make help` lists the targets that call it; every command takes --dry-run to print what it would
send without changing anything.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from . import canary, graph, isvc, manifests, rollout, scaling, smoke
from .clock import Clock, SystemClock
from .cluster import Cluster, KubeCluster
from .display import dry_run_header, patch_text, status_text
from .errors import DeployError
from .gates import Gate, PrometheusGate, ReadinessGate, Thresholds
from .observe import Observation
from .ops import Ops
from .patches import Patch
from .workload import Expected


def flag(text: str) -> bool:
    """DRY_RUN: on for 1, true, yes; off for empty, 0, false, no; anything else is a mistake."""
    value = text.strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("", "0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected 1/true/yes or 0/false/no, got {text!r}")


def optional_int(text: str) -> int | None:
    return int(text) if text.strip() else None


def _default_kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.exists() else "kubectl"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", default="ml-serving")
    common.add_argument("--name", default="", help="prefix for every object's name (NAME); empty: none")
    common.add_argument("--overlay", default="serverless", help="a directory under inferenceservices/overlays")
    common.add_argument("--manifests", type=Path, default=Path("inferenceservices"), help="the kustomize tree")
    common.add_argument("--kubectl", default=_default_kubectl(), help="kubectl binary, used for its kustomize")
    common.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    common.add_argument(
        "--dry-run", type=flag, nargs="?", const=True, default=False, help="print what would be sent; change nothing"
    )
    common.add_argument("--timeout-s", type=float, default=900.0)
    common.add_argument("--poll-s", type=float, default=5.0)

    parser = argparse.ArgumentParser(prog="isvctl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("render", "deploy"):
        p = sub.add_parser(name, parents=[common])
        p.add_argument("--image", default="")
        p.add_argument("--storage-uri", default="")
    p = sub.add_parser("canary", parents=[common])
    p.add_argument("--storage-uri", default="")
    p.add_argument("--image", default="")
    p.add_argument("--percent", type=int, default=10)
    p.add_argument("--steps", default="", help="e.g. 10,50,100; empty: one step at --percent")
    p.add_argument("--bake-time-s", type=float, default=300.0)
    p.add_argument("--gate-interval-s", type=float, default=30.0, help="check the gate this often during the bake")
    p.add_argument("--prometheus-url", default="")
    p.add_argument("--max-error-ratio", type=float, default=Thresholds.max_error_ratio)
    p.add_argument("--max-p99-latency-s", type=float, default=Thresholds.max_p99_latency_s)
    for name in ("promote", "rollback", "status", "undeploy"):
        sub.add_parser(name, parents=[common])
    p = sub.add_parser("autoscale", parents=[common])
    p.add_argument("--min-replicas", type=optional_int, default=None)
    p.add_argument("--max-replicas", type=optional_int, default=None)
    p.add_argument("--scale-metric", default="")
    p.add_argument("--scale-target", type=optional_int, default=None)
    p = sub.add_parser("predict", parents=[common])
    p.add_argument("--ingress-url", default="", help="send via this address with the service's Host header")
    for name in ("graph-canary", "graph-rollback"):
        p = sub.add_parser(name, parents=[common], help="move an InferenceGraph Splitter's weights")
        p.add_argument("--graph", required=True, help="the InferenceGraph's name")
        p.add_argument("--node", default="root", help="its Splitter node")
        p.add_argument("--canary-step", required=True, help="the step (by name) that takes the new traffic")
    p = sub.choices["graph-canary"]
    p.add_argument("--steps", default="", help="the canary step's weights, e.g. 10,50,100; empty: --percent")
    p.add_argument("--percent", type=int, default=10)
    p.add_argument("--bake-time-s", type=float, default=300.0)
    p.add_argument("--gate-interval-s", type=float, default=30.0)
    p.add_argument("--prometheus-url", default="")
    p.add_argument("--max-error-ratio", type=float, default=Thresholds.max_error_ratio)
    p.add_argument("--max-p99-latency-s", type=float, default=Thresholds.max_p99_latency_s)
    return parser


class DryRunOps(Ops):
    """Prints each patch instead of sending it; waits return at once."""

    def patch(self, patch: Patch) -> isvc.State:
        self.say(patch_text(self.namespace, self.name, patch))
        return self.observe().isvc

    def wait(self, target: rollout.Target, stale: frozenset[str] = frozenset()) -> Observation:
        return self.observe()


class App:
    """Commands over injected I/O, so tests run them against a fake cluster and clock."""

    def __init__(
        self,
        args: argparse.Namespace,
        cluster_factory: Callable[[], Cluster],
        clock: Clock,
        say: Callable[[str], None],
        gate: Gate | None = None,
        graph_gate: graph.MemberGate | None = None,
    ):
        self.args = args
        self._graph_gate = graph_gate
        self._cluster_factory = cluster_factory
        self._cluster: Cluster | None = None
        self.clock = clock
        self.say = say
        self._gate = gate

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            self._cluster = self._cluster_factory()
        return self._cluster

    def _instance(self, image: str | None = None) -> manifests.Instance:
        a = self.args
        return manifests.Instance(a.overlay, a.namespace, a.name, image)

    def _render(self, image: str | None = None, pins: manifests.Pins | None = None) -> list[dict[str, Any]]:
        return manifests.render(self.args.manifests, self._instance(image), self.args.kubectl, pins or manifests.Pins())

    def _isvc_name(self) -> str:
        return cast(str, manifests.one_of(self._render(), "InferenceService")["metadata"]["name"])

    def _ops(self, name: str | None = None) -> Ops:
        a = self.args
        cls = DryRunOps if a.dry_run else Ops
        return cls(self.cluster, a.namespace, name or self._isvc_name(), self.clock, self.say, a.timeout_s, a.poll_s)

    def _ops_headed(self, command: str) -> Ops:
        """The operations for `command`; a dry run first says what follows is only what it would send."""
        ops = self._ops()
        if self.args.dry_run:
            self.say(dry_run_header(command))
        return ops

    # -- commands ---------------------------------------------------------------------------

    def render(self) -> None:
        a = self.args
        pins = manifests.Pins({"model": {"storageUri": a.storage_uri}} if a.storage_uri else {})
        self.say(manifests.to_yaml(self._render(a.image or None, pins)).rstrip("\n"))

    def deploy(self) -> None:
        a = self.args
        name = self._isvc_name()
        current = self.cluster.get(isvc.API_VERSION, isvc.KIND, a.namespace, name)
        before = Observation(self.cluster, a.namespace, name) if current else None
        image, pins = a.image or None, manifests.Pins({"model": {"storageUri": a.storage_uri}} if a.storage_uri else {})
        if before is not None:
            image, pins = self._keep_serving(before)
        objects = self._render(image, pins)
        if a.dry_run:
            self.say(dry_run_header(f"server-side apply of {len(objects)} objects (field manager isvctl)"))
            self.say(manifests.to_yaml(objects).rstrip("\n"))
            return
        for obj in objects:
            meta = obj["metadata"]
            self.say(f"apply {obj['kind']} {meta.get('namespace', '')}/{meta['name']}".replace(" /", " "))
            self.cluster.apply(obj)
        spec = manifests.one_of(objects, "InferenceService")["spec"]["predictor"]["model"]
        expected = Expected(spec.get("storageUri"), spec.get("image") or manifests.runtime_image(objects))
        self.say(f"waiting up to {a.timeout_s:.0f} s for {expected.describe()} to serve all traffic")
        ops = self._ops(name)
        obs = ops.wait(rollout.rolled_out(expected), stale=rollout.failures(before) if before else frozenset())
        self.say(f"ready at {obs.isvc.url}")

    def _keep_serving(self, before: Observation) -> tuple[str | None, manifests.Pins]:
        """Deploying over a running service changes only what was asked: the model, the image and
        the predictor's name stay what serves now unless STORAGE_URI or IMAGE say otherwise."""
        a, state = self.args, before.isvc
        if state.knative_canary_in_progress or state.canaries:
            raise DeployError(
                f"{state.name} has a canary in progress: `make promote` or `make rollback` first, "
                "so a deploy cannot promote it by accident"
            )
        predictor: dict[str, Any] = {"model": {"storageUri": a.storage_uri or state.storage_uri}}
        if a.storage_uri and a.storage_uri != state.storage_uri:
            predictor["annotations"] = {isvc.PREVIOUS_STORAGE_URI_ANNOTATION: state.storage_uri}
        if state.predictor_name:
            predictor["name"] = state.predictor_name
        if state.image or a.image:
            # model.image overrides the runtime's image; a canary of IMAGE set it.
            predictor["model"]["image"] = a.image or state.image
        image = a.image or None
        if image is None:
            runtime = manifests.one_of(self._render(), "ServingRuntime")
            serving = self.cluster.get(runtime["apiVersion"], runtime["kind"], a.namespace, runtime["metadata"]["name"])
            if serving is not None:
                image = manifests.runtime_image([serving])
        return image, manifests.Pins(predictor)

    def canary(self) -> None:
        a = self.args
        plan = canary.CanaryPlan(
            storage_uri=a.storage_uri or None,
            image=a.image or None,
            steps_percent=canary.parse_steps(a.steps, a.percent),
            bake_time_s=a.bake_time_s,
            gate_interval_s=a.gate_interval_s,
            timeout_s=a.timeout_s,
            poll_s=a.poll_s,
        )
        if plan.storage_uri is None and plan.image is None:
            raise DeployError("a canary needs a new STORAGE_URI or IMAGE")
        gate = self._gate or self._gate_from(a)
        ops = self._ops()
        obs = ops.observe()
        if a.dry_run:
            self.say(dry_run_header("canary"))
            for line in canary.describe(obs, plan, gate):
                self.say(line)
            return
        obs = canary.run(ops, plan, gate)
        self.say(status_text(ops.observe()))

    def _gate_from(self, a: argparse.Namespace) -> Gate:
        if not a.prometheus_url:
            return ReadinessGate()
        from .prometheus import PrometheusAPI

        api = PrometheusAPI(a.prometheus_url)
        # Before step 1: a gate that cannot read Prometheus would fail the first bake anyway.
        api.check_reachable()
        return PrometheusGate(api, Thresholds(a.max_error_ratio, a.max_p99_latency_s))

    def promote(self) -> None:
        ops = self._ops_headed("promote")
        obs = ops.promote(ops.observe())
        if not self.args.dry_run:
            self.say(status_text(obs))

    def rollback(self) -> None:
        ops = self._ops_headed("rollback")
        outcome = ops.rollback(ops.observe())
        if not self.args.dry_run:
            self.say(outcome)
            self.say(status_text(ops.observe()))

    def autoscale(self) -> None:
        a = self.args
        ops = self._ops()
        state = ops.observe().isvc
        request = scaling.Request(a.min_replicas, a.max_replicas, a.scale_metric or None, a.scale_target)
        patch = scaling.patch(state, request)
        if a.dry_run:
            self.say(dry_run_header(f"autoscale ({scaling.scaler_of(state).value})"))
            self.say(patch_text(a.namespace, state.name, patch))
            return
        self.say(f"autoscale: {a.namespace}/{state.name} ({scaling.scaler_of(state).value})")
        after = ops.patch(patch)
        ops.wait(scaling.took_effect(after))

    def status(self) -> None:
        self.say(status_text(self._ops().observe()))

    def predict(self) -> None:
        a = self.args
        state = self._ops().observe().isvc
        if not state.url:
            raise DeployError(f"{a.namespace}/{state.name} has no URL yet: is it Ready? (`make status`)")
        for request in smoke.requests_for(state.url, state.name, a.ingress_url or None):
            if a.dry_run:
                self.say(f"{dry_run_header('smoke request')}\n{smoke.describe(request)}")
            else:
                self.say(smoke.send(request, timeout_s=60.0))

    # -- graphs ------------------------------------------------------------------------------

    def _graph_ops(self) -> tuple[graph.GraphOps, graph.Split]:
        a = self.args
        if not a.graph or not a.canary_step:
            raise DeployError("GRAPH and GRAPH_CANARY_STEP are required: the InferenceGraph and its new step")
        ops = graph.GraphOps(self.cluster, self.clock, self.say, a.timeout_s, a.poll_s)
        return ops, ops.read(a.namespace, a.graph, a.node, a.canary_step)

    def graph_canary(self) -> None:
        a = self.args
        plan = graph.GraphCanaryPlan(
            steps_percent=canary.parse_steps(a.steps, a.percent),
            bake_time_s=a.bake_time_s,
            gate_interval_s=a.gate_interval_s,
            timeout_s=a.timeout_s,
            poll_s=a.poll_s,
        )
        ops, split = self._graph_ops()
        graph.check_ready_to_start(split)
        source = None
        if a.prometheus_url:
            from .prometheus import PrometheusAPI

            source = PrometheusAPI(a.prometheus_url)
            source.check_reachable()
        gate = self._graph_gate or graph.MemberGate(source, Thresholds(a.max_error_ratio, a.max_p99_latency_s))
        if a.dry_run:
            self.say(dry_run_header("graph canary"))
            for line in graph.describe(split, plan, gate):
                self.say(line)
            return
        graph.run(ops, split, plan, gate)

    def graph_rollback(self) -> None:
        ops, split = self._graph_ops()
        if self.args.dry_run:
            self.say(dry_run_header("graph rollback"))
            self.say(graph.patch_text(split, split.with_canary_at(0)))
            return
        self.say(ops.rollback(split))

    def undeploy(self) -> None:
        a = self.args
        objects = list(reversed(self._render()))
        if a.dry_run:
            self.say(dry_run_header(f"delete of {len(objects)} objects"))
        for obj in objects:
            meta = obj["metadata"]
            line = f"DELETE {obj['apiVersion']} {obj['kind']} {meta.get('namespace', '-')}/{meta['name']}"
            if a.dry_run:
                self.say(line)
            else:
                self.say(line + ("" if self.cluster.delete(obj) else " (already gone)"))


def main(
    argv: list[str] | None = None,
    *,
    cluster_factory: Callable[[], Cluster] | None = None,
    clock: Clock | None = None,
    gate: Gate | None = None,
    graph_gate: graph.MemberGate | None = None,
) -> int:
    args = _parser().parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    app = App(
        args, cluster_factory or (lambda: KubeCluster(args.context)), clock or SystemClock(), say, gate, graph_gate
    )
    try:
        getattr(app, args.command.replace("-", "_"))()
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the InferenceService is left as it is now (`make status`)", file=sys.stderr)
        return 130
    return 0
