"""Command line of the deploy tool; `make help` lists the targets that call it."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from . import canary, isvc, manifests, patches, rollout, smoke
from .clock import Clock, SystemClock
from .cluster import Cluster, KubeCluster
from .display import dry_run_header, patch_text, status_text
from .errors import DeployError
from .gates import Gate, PrometheusGate, ReadinessGate, Thresholds

REPO_ROOT = Path(__file__).resolve().parents[2]


def _optional_int(text: str) -> int | None:
    return int(text) if text.strip() else None


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", default="ml-serving")
    common.add_argument("--name", default="image-classifier")
    common.add_argument("--overlay", default="serverless", help="a directory under inferenceservices/overlays")
    common.add_argument("--kubectl", default="kubectl", help="kubectl binary, used only for its kustomize")
    common.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    common.add_argument("--dry-run", action="store_true", help="print what would be sent; change nothing")
    common.add_argument("--timeout-s", type=float, default=900.0)
    common.add_argument("--poll-s", type=float, default=5.0)

    parser = argparse.ArgumentParser(prog="deploy.py", description=__doc__)
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
    p.add_argument("--prometheus-url", default=os.environ.get("PROMETHEUS_URL", ""))
    p.add_argument("--max-error-ratio", type=float, default=Thresholds.max_error_ratio)
    p.add_argument("--max-p99-latency-s", type=float, default=Thresholds.max_p99_latency_s)
    for name in ("promote", "rollback", "status", "undeploy"):
        sub.add_parser(name, parents=[common])
    p = sub.add_parser("autoscale", parents=[common])
    p.add_argument("--min-replicas", type=_optional_int, default=None)
    p.add_argument("--max-replicas", type=_optional_int, default=None)
    p.add_argument("--scale-metric", default="")
    p.add_argument("--scale-target", type=_optional_int, default=None)
    p = sub.add_parser("predict", parents=[common])
    p.add_argument("--ingress-url", default="", help="send via this address with the service's Host header")
    return parser


class App:
    """Commands over injected I/O, so tests run them against a fake cluster and clock."""

    def __init__(
        self,
        args: argparse.Namespace,
        cluster_factory: Callable[[], Cluster],
        clock: Clock,
        say: Callable[[str], None],
        gate: Gate | None = None,
    ):
        self.args = args
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

    def _objects(self) -> list[dict]:
        a = self.args
        overlay = REPO_ROOT / "inferenceservices" / "overlays" / a.overlay
        target = manifests.Target(
            a.name, a.namespace, getattr(a, "image", "") or None, getattr(a, "storage_uri", "") or None
        )
        return manifests.customize(manifests.render(overlay, a.kubectl), target)

    def _state(self) -> isvc.State:
        return isvc.parse(self.cluster.get_isvc(self.args.namespace, self.args.name))

    def _wait(self, target: rollout.Target) -> isvc.State:
        a = self.args
        return rollout.wait_for(
            self.cluster,
            a.namespace,
            a.name,
            target,
            timeout_s=a.timeout_s,
            poll_s=a.poll_s,
            clock=self.clock,
            say=self.say,
        )

    def _patch(self, patch: dict, what: str) -> bool:
        """Print or send one patch; True when sent."""
        a = self.args
        if a.dry_run:
            self.say(dry_run_header(what))
            self.say(patch_text(a.namespace, a.name, patch))
            return False
        self.say(f"{what}: {a.namespace}/{a.name}")
        self.cluster.patch_isvc(a.namespace, a.name, patch)
        return True

    # -- commands ---------------------------------------------------------------------------

    def render(self) -> None:
        self.say(manifests.to_yaml(self._objects()).rstrip("\n"))

    def deploy(self) -> None:
        a = self.args
        objects = self._objects()
        manifests.isvc_of(objects)
        if a.dry_run:
            self.say(dry_run_header(f"server-side apply of {len(objects)} objects (field manager isvctl)"))
            self.say(manifests.to_yaml(objects).rstrip("\n"))
            return
        for obj in objects:
            meta = obj["metadata"]
            self.say(f"apply {obj['kind']} {meta.get('namespace', '')}/{meta['name']}".replace(" /", " "))
            self.cluster.apply(obj)
        self.say(f"waiting up to {a.timeout_s:.0f} s for {a.namespace}/{a.name} to be Ready")
        state = self._wait(rollout.ready)
        self.say(f"ready at {state.url}")

    def canary(self) -> None:
        a = self.args
        plan = canary.CanaryPlan(
            storage_uri=a.storage_uri or None,
            image=a.image or None,
            steps_percent=canary.parse_steps(a.steps, a.percent),
            bake_time_s=a.bake_time_s,
            timeout_s=a.timeout_s,
            poll_s=a.poll_s,
        )
        gate = self._gate or (
            PrometheusGate(_prometheus(a.prometheus_url), Thresholds(a.max_error_ratio, a.max_p99_latency_s))
            if a.prometheus_url
            else ReadinessGate()
        )
        current = self._state()
        if a.dry_run:
            self.say(dry_run_header("canary"))
            for line in canary.describe(current, plan, gate):
                self.say(line)
            return
        state = canary.run(self.cluster, current, plan, gate, clock=self.clock, say=self.say)
        self.say(status_text(state))

    def promote(self) -> None:
        current = self._state()
        if current.canary_percent is None and current.mode.splits_traffic:
            self.say(f"{current.namespace}/{current.name} has no canary: nothing to promote")
            return
        if self._patch(patches.promote(), "promote"):
            self.say(status_text(self._wait(rollout.ready)))

    def rollback(self) -> None:
        current = self._state()
        patch = patches.rollback(current)
        if self._patch(patch, "rollback"):
            if current.mode.splits_traffic:
                state = self._wait(canary._restored(current.latest_created))
            else:
                state = self._wait(canary._restored_standard)
            self.say(status_text(state))

    def autoscale(self) -> None:
        a = self.args
        current = self._state()
        patch = patches.autoscale(
            mode=current.mode,
            min_replicas=a.min_replicas,
            max_replicas=a.max_replicas,
            scale_metric=a.scale_metric or None,
            scale_target=a.scale_target,
        )
        if self._patch(patch, "autoscale"):
            self.say(status_text(self._wait(rollout.ready)))

    def status(self) -> None:
        self.say(status_text(self._state()))

    def predict(self) -> None:
        a = self.args
        state = self._state()
        if not state.url:
            raise DeployError(f"{a.namespace}/{a.name} has no URL yet: is it Ready? (`make status`)")
        for request in smoke.requests_for(state.url, a.name, a.ingress_url or None):
            if a.dry_run:
                self.say(f"{dry_run_header('smoke request')}\n{smoke.describe(request)}")
            else:
                self.say(smoke.send(request, timeout_s=60.0))

    def undeploy(self) -> None:
        a = self.args
        objects = list(reversed(self._objects()))
        if a.dry_run:
            self.say(dry_run_header(f"delete of {len(objects)} objects"))
        for obj in objects:
            meta = obj["metadata"]
            line = f"DELETE {obj['apiVersion']} {obj['kind']} {meta.get('namespace', '-')}/{meta['name']}"
            if a.dry_run:
                self.say(line)
            else:
                self.say(line + ("" if self.cluster.delete(obj) else " (already gone)"))


def _prometheus(url: str):
    from .prometheus import PrometheusAPI

    return PrometheusAPI(url)


def main(
    argv: list[str] | None = None,
    *,
    cluster_factory: Callable[[], Cluster] | None = None,
    clock: Clock | None = None,
    gate: Gate | None = None,
) -> int:
    args = _parser().parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    app = App(args, cluster_factory or (lambda: KubeCluster(args.context)), clock or SystemClock(), say, gate)
    try:
        getattr(app, args.command)()
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the InferenceService is left as it is now (`make status`)", file=sys.stderr)
        return 130
    return 0
