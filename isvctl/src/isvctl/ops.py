"""Rollout operations shared by the commands: send a patch, wait for its effect, promote, roll back.

Three ways to ship a new model, one per kind of cluster:
  Knative mode          canaryTrafficPercent splits traffic between revisions (KServe's own canary).
  Standard + Gateway    spec.canary runs the new model beside the stable one and KServe's HTTPRoute
                        splits traffic by weight (KServe 0.21, httproute_reconciler.go).
  Standard otherwise    no traffic split exists: the new model replaces every replica, one at a time
                        (maxUnavailable 0), gated like a canary step and restored on failure.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from . import isvc, patches, rollout
from .clock import Clock
from .cluster import Cluster
from .errors import DeployError, RolloutFailed
from .isvc import Mode, State
from .observe import Observation
from .patches import Patch
from .progress import Progress, done, failed, wait
from .rollout import Target
from .workload import Expected


class Strategy(enum.Enum):
    KNATIVE_SPLIT = "Knative traffic split (canaryTrafficPercent)"
    GATEWAY_SPLIT = "Gateway API traffic split (spec.canary)"
    ROLLING = "gated rolling replace (no traffic split without the Gateway API)"

    @property
    def splits_traffic(self) -> bool:
        return self is not Strategy.ROLLING


def strategy_for(obs: Observation) -> Strategy:
    mode = obs.isvc.mode
    if mode is None:
        raise DeployError(f"{obs.isvc.name}: KServe has not reconciled it yet (no status.deploymentMode); try again")
    if mode is Mode.KNATIVE:
        return Strategy.KNATIVE_SPLIT
    # KServe writes an HTTPRoute for the predictor only when it serves through the Gateway API,
    # and only then does spec.canary receive traffic (applyCanaryWeights).
    return Strategy.GATEWAY_SPLIT if obs.route is not None else Strategy.ROLLING


def expected_after(current: State, storage_uri: str | None, image: str | None) -> Expected:
    return Expected(storage_uri=storage_uri or current.storage_uri, image=image)


def previous_expected(state: State) -> Expected:
    return Expected(storage_uri=state.previous_storage_uri or state.storage_uri, image=state.previous_image or None)


@dataclass
class Ops:
    cluster: Cluster
    namespace: str
    name: str
    clock: Clock
    say: Callable[[str], None]
    timeout_s: float
    poll_s: float

    def observe(self) -> Observation:
        return Observation(self.cluster, self.namespace, self.name)

    def patch(self, patch: Patch) -> State:
        return isvc.parse(self.cluster.patch(isvc.API_VERSION, isvc.KIND, self.namespace, self.name, patch))

    def wait(self, target: Target, stale: frozenset[str] = frozenset()) -> Observation:
        return rollout.wait_for(
            self.cluster,
            self.namespace,
            self.name,
            target,
            timeout_s=self.timeout_s,
            poll_s=self.poll_s,
            clock=self.clock,
            say=self.say,
            stale=stale,
        )

    # -- promote ---------------------------------------------------------------------------

    def promote(self, obs: Observation) -> Observation:
        state = obs.isvc
        strategy = strategy_for(obs)
        if strategy is Strategy.KNATIVE_SPLIT:
            if state.canary_percent == 0:
                raise DeployError(
                    f"{state.name}'s canary was rolled back (canaryTrafficPercent 0): nothing to promote; "
                    "start a new one with `make canary`"
                )
            if state.canary_percent is None:
                raise DeployError(f"{state.name} has no canary (no canaryTrafficPercent): nothing to promote")
            revision = state.latest_created
            if revision is None or state.latest_ready != revision:
                raise DeployError(f"revision {revision} is not ready: nothing to promote yet (`make status`)")
            self.say(f"promote: {self.namespace}/{self.name} revision {revision} to 100%")
            self.patch(patches.promote())
            return self.wait(rollout.knative_promoted(revision))
        if not state.canaries:
            raise DeployError(
                f"{state.name} has no canary: in Standard mode without the Gateway API a new model "
                "already rolled out to every replica"
            )
        (canary,) = state.canaries
        self.say(f"promote: {self.namespace}/{self.name} canary {canary.name} becomes the stable predictor")
        after = self.patch(patches.promote_canary(state))
        expected = expected_after(state, canary.storage_uri, canary.image)
        return self.wait(rollout.all_of(rollout.rolled_out(expected), rollout.single_backend(after.workload_name)))

    # -- roll back -------------------------------------------------------------------------

    def rollback(self, obs: Observation) -> str:
        """Traffic back to the previous model at once where the cluster splits traffic; then the
        spec names the previous model again, so a later promote cannot bring the rejected one back."""
        state = obs.isvc
        strategy = strategy_for(obs)
        if strategy is Strategy.GATEWAY_SPLIT and state.canaries:
            self.say(f"rollback: {self.namespace}/{self.name}: remove canary {state.canaries[0].name}")
            self.patch(patches.remove_canaries())
            self.wait(rollout.single_backend(state.workload_name))
            return f"rolled back: all traffic on {state.workload_name} ({state.storage_uri})"
        if strategy is Strategy.KNATIVE_SPLIT and (state.knative_canary_in_progress or state.canary_percent == 0):
            return self._knative_unpin(state)
        if not state.has_previous:
            raise DeployError(
                f"{state.namespace}/{state.name} has no earlier model to return to: it has served only "
                f"{state.storage_uri} since it was deployed"
            )
        expected = previous_expected(state)
        self.say(f"rollback: {self.namespace}/{self.name} rolls {expected.describe()} out again")
        self.patch(patches.restore(state))
        self.wait(rollout.rolled_out(expected), stale=rollout.failures(obs))
        return f"rolled back: serving {expected.describe()}"

    def _knative_unpin(self, state: State) -> str:
        rejected = state.latest_created
        if state.canary_percent and (not state.latest_rolledout or state.latest_rolledout == rejected):
            raise DeployError(
                f"{state.namespace}/{state.name}: revision {rejected} is the only one ever rolled out: "
                "there is no earlier revision to send traffic back to"
            )
        if not state.has_previous:
            self.say(f"rollback: {self.namespace}/{self.name}: all traffic back to {state.latest_rolledout}")
            self.patch(patches.traffic(0))
            self.wait(rollout.knative_restored(rejected or ""))
            return (
                f"rolled back: all traffic on {state.latest_rolledout}; the spec still names {state.storage_uri} "
                "(no previous model recorded): `make deploy STORAGE_URI=...` sets the one you want"
            )
        expected = previous_expected(state)
        self.say(f"rollback: {self.namespace}/{self.name}: all traffic back to {state.latest_rolledout} now")
        self.patch(patches.restore(state, pin_traffic=True))
        self.wait(rollout.knative_restored(rejected or ""))
        self.say(f"  then {expected.describe()} again as the spec's model, at 0% until its revision is ready")
        obs = self.wait(rollout.rolled_out(expected, percent=0))
        revision = obs.isvc.latest_created or ""
        self.patch(patches.traffic_unset())
        self.wait(rollout.knative_promoted(revision))
        return f"rolled back: all traffic on {revision} ({expected.describe()})"


def ready_revision(revision: str) -> Target:
    """Gate readiness in Knative mode: the canary revision is still the latest ready one."""

    def target(obs: Observation) -> Progress:
        state = obs.isvc
        if failure := state.failure():
            return failed(failure)
        if state.latest_ready != revision:
            return wait(f"latest ready revision is {state.latest_ready}, not {revision}")
        return done(f"revision {revision} ready")

    return target


def rollback_or_explain(ops: Ops) -> str:
    """After a failed step: roll back, and say so whatever happens to the rollback itself."""
    try:
        return ops.rollback(ops.observe())
    except (DeployError, RolloutFailed) as exc:
        return f"the rollback did not finish: {exc}"
