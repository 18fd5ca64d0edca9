"""Waiting for an InferenceService to reach a target state, with progress and a timeout.

A target is a function of one Observation: DONE, WAIT (with what we wait for) or FAILED. None of
them trusts status.observedGeneration (see isvc.py): a rollout is done when the workload carries
the new spec (Expected) and has rolled it out, the way its own controller reports it.
"""

from __future__ import annotations

from collections.abc import Callable

from . import isvc
from .clock import Clock
from .cluster import Cluster
from .errors import RolloutFailed
from .isvc import Mode
from .observe import Observation
from .progress import Phase, Progress, done, failed, wait
from .workload import Expected, new_pods_progress, rollout_status

Target = Callable[[Observation], Progress]


def _mode_known(obs: Observation) -> Mode | Progress:
    if obs.isvc.mode is None:
        return wait("KServe has not reconciled the InferenceService yet (no status.deploymentMode)")
    return obs.isvc.mode


def rolled_out(expected: Expected, percent: int = 100) -> Target:
    """The new spec serves: Knative, its revision is ready with `percent` of the traffic; Standard,
    the Deployment has rolled it out to every replica."""

    def target(obs: Observation) -> Progress:
        mode = _mode_known(obs)
        if isinstance(mode, Progress):
            return mode
        if mode is Mode.KNATIVE:
            return _knative_rolled_out(obs, expected, percent)
        return _deployment_rolled_out(obs, obs.isvc.workload_name, expected)

    return target


def _knative_rolled_out(obs: Observation, expected: Expected, percent: int) -> Progress:
    state = obs.isvc
    ksvc = obs.knative_service(state.workload_name)
    if ksvc is None or not expected.matches(ksvc.template):
        # KServe writes the Knative Service only when Knative's webhook accepts it; otherwise it
        # reports ReconcileFailed with the webhook's message (predictor.go Reconcile).
        if failure := state.failure():
            return failed(failure)
        return wait(f"KServe has not written {expected.describe()} into Knative Service {state.workload_name} yet")
    if ksvc.generation > ksvc.observed_generation or not ksvc.latest_created:
        return wait(f"Knative has not created the revision for Knative Service {ksvc.name} yet")
    revision = ksvc.latest_created
    if failure := state.failure():
        return failed(failure)
    if state.latest_created != revision:
        return wait(f"KServe has not reported revision {revision} yet")
    if state.latest_ready != revision:
        return wait(f"revision {revision} starting")
    got = state.percent_of(revision)
    if got != percent:
        return wait(f"revision {revision} ready, traffic {got}% (want {percent}%)")
    return done(f"revision {revision} ready with {percent}% of traffic")


def _deployment_rolled_out(obs: Observation, name: str, expected: Expected) -> Progress:
    deployment = obs.deployment(name)
    if deployment is None or not expected.matches(deployment.template):
        if failure := obs.isvc.failure():
            return failed(failure)
        return wait(f"KServe has not written {expected.describe()} into Deployment {name} yet")
    if problem := new_pods_progress(obs.pods, expected):
        if problem.phase is Phase.FAILED:
            return problem
    progress = rollout_status(deployment)
    if progress.phase is Phase.WAIT and problem is not None:
        return wait(f"{progress.detail}; {problem.detail}")
    return progress


def knative_traffic(revision: str, percent: int) -> Target:
    """Knative: `revision` serves `percent` of traffic (after a traffic-only patch)."""

    def target(obs: Observation) -> Progress:
        if failure := obs.isvc.failure():
            return failed(failure)
        if (got := obs.isvc.percent_of(revision)) != percent:
            return wait(f"revision {revision} at {got}% (want {percent}%)")
        return done(f"revision {revision} at {percent}%")

    return target


def knative_promoted(revision: str) -> Target:
    """Knative: `revision` takes all traffic as the latest revision and is the rolled-out one."""

    def target(obs: Observation) -> Progress:
        state = obs.isvc
        if state.percent_of(revision) != 100:
            return wait(f"revision {revision} at {state.percent_of(revision)}% (want 100%)")
        if state.latest_rolledout != revision:
            return wait(f"KServe has not recorded {revision} as rolled out yet")
        return done(f"revision {revision} serves all traffic")

    return target


def knative_restored(rejected: str) -> Target:
    """Knative rollback: no traffic on the rejected revision. No failure check: the rejected
    revision's conditions linger, and all we need is traffic off it."""

    def target(obs: Observation) -> Progress:
        got = obs.isvc.percent_of(rejected)
        if got:
            return wait(f"revision {rejected} still at {got}%")
        serving = next((t.revision for t in obs.isvc.traffic if t.percent == 100), None)
        return done(f"all traffic on {serving or 'the previous revision'}")

    return target


def canary_healthy(canary: str, expected: Expected) -> Target:
    """Standard mode, spec.canary: the canary's Deployment has rolled out the new model and KServe
    reports the canary ready (reconcileCanaryDeployments, predictor.go)."""

    def target(obs: Observation) -> Progress:
        name = isvc.predictor_service_name(obs.isvc.name, canary)
        rolled = _deployment_rolled_out(obs, name, expected)
        if rolled.phase is not Phase.DONE:
            return rolled
        status = obs.isvc.canary_status(canary)
        if status is None or not status.ready:
            return wait(f"KServe has not reported canary {canary} ready yet")
        return done(f"canary {canary} ready")

    return target


def canary_split(canary: str, percent: int, expected: Expected) -> Target:
    """Standard mode, spec.canary: the canary is healthy, KServe reports it at `percent` and the
    HTTPRoute sends it that weight (applyCanaryWeights, httproute_reconciler.go)."""
    healthy = canary_healthy(canary, expected)

    def target(obs: Observation) -> Progress:
        progress = healthy(obs)
        if progress.phase is not Phase.DONE:
            return progress
        status = obs.isvc.canary_status(canary)
        if status is None or status.percent != percent:
            return wait(f"KServe has not reported canary {canary} at {percent}% yet")
        name = isvc.predictor_service_name(obs.isvc.name, canary)
        weight = (obs.route or {}).get(name, 0)
        if weight != percent:
            return wait(f"HTTPRoute sends {weight}% to {name} (want {percent}%)")
        return done(f"canary {canary} ready with {percent}% of traffic")

    return target


def single_backend(name: str) -> Target:
    """Standard mode: the HTTPRoute sends everything to `name`, and no canary is left."""

    def target(obs: Observation) -> Progress:
        backends = obs.route or {}
        if backends != {name: 100}:
            split = ", ".join(f"{b} {w}%" for b, w in sorted(backends.items())) or "no backends"
            return wait(f"HTTPRoute: {split} (want all on {name})")
        if obs.isvc.canary_statuses:
            return wait("KServe still reports canaries")
        return done(f"all traffic on {name}")

    return target


def all_of(*targets: Target) -> Target:
    def target(obs: Observation) -> Progress:
        progress = done("")
        for t in targets:
            progress = t(obs)
            if progress.phase is not Phase.DONE:
                return progress
        return progress

    return target


def failures(obs: Observation) -> frozenset[str]:
    """Failure messages already on the InferenceService: stale until shown to be about our change."""
    failure = obs.isvc.failure()
    return frozenset({failure} if failure else ())


def wait_for(
    cluster: Cluster,
    namespace: str,
    name: str,
    target: Target,
    *,
    timeout_s: float,
    poll_s: float,
    clock: Clock,
    say: Callable[[str], None],
    stale: frozenset[str] = frozenset(),
    stale_grace_s: float = 30.0,
) -> Observation:
    """Poll until `target` is DONE; on FAILED or timeout raise RolloutFailed with pod events.

    A failure whose message was already there before our change (`stale`) is believed only after
    `stale_grace_s`: KServe may not have reconciled the new generation yet, and it records nothing
    that says which generation a condition is about.
    """
    start_s = clock.now_s()
    last_detail = None
    while True:
        obs = Observation(cluster, namespace, name)
        progress = target(obs)
        if progress.phase is Phase.DONE:
            say(f"  ✓ {progress.detail}")
            return obs
        if progress.phase is Phase.FAILED and not (
            progress.detail in stale and clock.now_s() - start_s < stale_grace_s
        ):
            raise RolloutFailed(explain(cluster, obs, progress.detail))
        if progress.detail != last_detail:
            say(f"  … {progress.detail}")
            last_detail = progress.detail
        if clock.now_s() - start_s >= timeout_s:
            raise RolloutFailed(explain(cluster, obs, f"timed out after {timeout_s:.0f} s: {progress.detail}"))
        clock.sleep(poll_s)


def explain(cluster: Cluster, obs: Observation, why: str) -> str:
    state = obs.isvc
    lines = [f"{state.namespace}/{state.name}: {why}"]
    for cond in state.conditions.values():
        if cond.status != "True" and cond.message and cond.message not in why:
            lines.append(f"  {cond.type}: {cond.reason}: {cond.message}")
    for p in obs.pods:
        if p.problem and p.problem not in why:
            lines.append(f"  pod {p.name}: {p.problem}")
    events = cluster.events(state.namespace, [state.name, *(p.name for p in obs.pods)])
    if events:
        lines.append("recent events:")
        lines.extend(f"  {e}" for e in events)
    return "\n".join(lines)
