"""The canary state machine: shift traffic step by step, bake with gates, roll back on failure.

    start ─▶ step(p₁) ─▶ bake: gate every interval ─all pass─▶ step(p₂) … ─▶ [last step 100] ─▶ promote
                │               └─first failing window─▶ rollback ─▶ GateFailed
                └─new model fails / times out─▶ rollback ─▶ RolloutFailed

ops.Strategy says how the cluster splits traffic. Without a split (Standard mode without the Gateway
API) the new model replaces every replica as one gated step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import patches, rollout
from .display import patch_text
from .errors import DeployError, GateFailed, RolloutFailed
from .gates import Gate, Subject, bake
from .isvc import State, predictor_service_name
from .observe import Observation
from .ops import Ops, Strategy, expected_after, ready_revision, rollback_or_explain, strategy_for
from .progress import Phase, Progress, done, wait
from .workload import Expected


@dataclass(frozen=True)
class CanaryPlan:
    storage_uri: str | None
    image: str | None
    steps_percent: tuple[int, ...]
    bake_time_s: float
    gate_interval_s: float
    timeout_s: float
    poll_s: float = 5.0

    def steps_for(self, strategy: Strategy) -> tuple[int | None, ...]:
        # None: no traffic share at all (the new model replaces every replica).
        return self.steps_percent if strategy.splits_traffic else (None,)

    @property
    def promotes(self) -> bool:
        return self.steps_percent[-1] == 100


def parse_steps(steps: str, default_percent: int) -> tuple[int, ...]:
    """'10,50,100' -> (10, 50, 100); empty -> (default_percent,). Steps must rise within 1..100."""
    if not steps.strip():
        if not 1 <= default_percent <= 100:
            raise DeployError(f"CANARY_PERCENT must be within 1..100, got {default_percent}")
        return (default_percent,)
    try:
        values = tuple(int(part) for part in steps.split(","))
    except ValueError:
        raise DeployError(f"CANARY_STEPS must be comma-separated integers like 10,50,100, got {steps!r}") from None
    if any(not 1 <= v <= 100 for v in values) or list(values) != sorted(set(values)):
        raise DeployError(f"CANARY_STEPS must rise strictly within 1..100, got {steps!r}")
    return values


def canary_name(current: State) -> str:
    """spec.canary's predictor name: new with every canary (the generation it arrives at), and
    never the stable predictor's (validateCanarySpecs)."""
    return f"g{current.generation + 1}"


def _share(percent: int | None) -> str:
    return f"{percent}% of traffic" if percent is not None else "all replicas"


def describe(obs: Observation, plan: CanaryPlan, gate: Gate) -> list[str]:
    """What `run` would send, in order: the dry-run output."""
    current, strategy = obs.isvc, strategy_for(obs)
    ns, name = current.namespace, current.name
    lines = [f"# canary of {ns}/{name} ({current.mode.value if current.mode else '?'} mode, {strategy.value})"]
    lines.append(f"# serving {current.storage_uri} now")
    steps = plan.steps_for(strategy)
    if not strategy.splits_traffic and plan.steps_percent != (100,):
        lines.append("# no traffic split here: the new model replaces every replica in one gated step")
    for i, percent in enumerate(steps, 1):
        lines.append(f"# step {i}/{len(steps)}: {_share(percent)} to the new model")
        lines.append(patch_text(ns, name, _step_patch(current, plan, strategy, i, percent)))
        lines.append(
            f"# then wait up to {plan.timeout_s:.0f} s for it, bake {plan.bake_time_s:.0f} s checking "
            f"{gate.describe()} every {plan.gate_interval_s:.0f} s"
        )
    if strategy.splits_traffic and plan.promotes:
        lines.append("# after the last bake: promote")
        lines.append(patch_text(ns, name, _promote_patch(current, plan, strategy)))
    lines.append("# if a step fails: roll back")
    lines.append(patch_text(ns, name, _rollback_patch(current, plan, strategy)))
    return lines


def _step_patch(current: State, plan: CanaryPlan, strategy: Strategy, i: int, percent: int | None) -> patches.Patch:
    if strategy is Strategy.GATEWAY_SPLIT:
        canary = patches.new_canary(
            current, name=canary_name(current), storage_uri=plan.storage_uri, image=plan.image, percent=percent or 0
        )
        return patches.canaries(current, canary)
    if i == 1:
        return patches.replace(current, storage_uri=plan.storage_uri, image=plan.image, percent=percent)
    return patches.traffic(percent or 0)


def _after_step_one(current: State, plan: CanaryPlan) -> State:
    """The predictor as the first step leaves it (for the dry run's promote and rollback)."""
    changed = patches.replace(current, storage_uri=plan.storage_uri, image=plan.image)["spec"]["predictor"]
    return replace(
        current,
        storage_uri=plan.storage_uri or current.storage_uri,
        image=plan.image or current.image,
        predictor_annotations={**current.predictor_annotations, **changed["annotations"]},
    )


def _promote_patch(current: State, plan: CanaryPlan, strategy: Strategy) -> patches.Patch:
    if strategy is Strategy.GATEWAY_SPLIT:
        canary = patches.new_canary(
            current, name=canary_name(current), storage_uri=plan.storage_uri, image=plan.image, percent=100
        )
        return patches.promote_canary(replace(current, canaries=(canary,)))
    return patches.promote()


def _rollback_patch(current: State, plan: CanaryPlan, strategy: Strategy) -> patches.Patch:
    if strategy is Strategy.GATEWAY_SPLIT:
        return patches.remove_canaries()
    return patches.restore(_after_step_one(current, plan), pin_traffic=strategy is Strategy.KNATIVE_SPLIT)


def run(ops: Ops, plan: CanaryPlan, gate: Gate) -> Observation:
    obs = ops.observe()
    current, strategy = obs.isvc, strategy_for(obs)
    stale = rollout.failures(obs)
    expected = expected_after(current, plan.storage_uri, plan.image)
    steps = plan.steps_for(strategy)
    say = ops.say
    say(f"canary of {ops.namespace}/{ops.name}: {strategy.value}")
    if not strategy.splits_traffic and plan.steps_percent != (100,):
        say("no traffic split here: the new model replaces every replica in one gated step")
    canary = None
    if strategy is Strategy.GATEWAY_SPLIT:
        canary = patches.new_canary(
            current, name=canary_name(current), storage_uri=plan.storage_uri, image=plan.image, percent=steps[0] or 0
        )
    subject: Subject | None = None
    for i, percent in enumerate(steps, 1):
        say(f"step {i}/{len(steps)}: {_share(percent)} to {plan.storage_uri or plan.image}")
        if strategy is Strategy.GATEWAY_SPLIT:
            assert canary is not None and percent is not None
            canary = replace(canary, percent=percent)
            ops.patch(patches.canaries(current, canary))
            target = rollout.canary_split(canary.name, percent, expected)
        elif i == 1:
            ops.patch(patches.replace(current, storage_uri=plan.storage_uri, image=plan.image, percent=percent))
            target = rollout.rolled_out(expected, percent if percent is not None else 100)
        else:
            assert subject is not None and percent is not None
            target = rollout.knative_traffic(_revision_of(subject), percent)
            ops.patch(patches.traffic(percent))
        try:
            obs = ops.wait(target, stale=stale)
        except RolloutFailed as exc:
            raise RolloutFailed(f"{exc}\n{rollback_or_explain(ops)}") from None
        if subject is None:
            subject = _subject(obs, strategy, expected, canary.name if canary else "")
        verdict = bake(
            ops.clock,
            ops.say,
            plan.bake_time_s,
            plan.gate_interval_s,
            lambda: gate.check(ops.observe(), subject, plan.gate_interval_s),  # noqa: B023 (called within this step)
        )
        if verdict is not None:
            where = f" at {percent}%" if percent is not None else ""
            raise GateFailed(f"canary gate failed{where}: {verdict}\n{rollback_or_explain(ops)}")
    if strategy.splits_traffic and plan.promotes:
        return ops.promote(ops.observe())
    if strategy.splits_traffic:
        say(f"canary holds {steps[-1]}% of traffic: `make promote` to finish, `make rollback` to abort")
    return obs


def _revision_of(subject: Subject) -> str:
    return subject.what.removeprefix("revision ")


def _subject(obs: Observation, strategy: Strategy, expected: Expected, canary: str) -> Subject:
    state = obs.isvc
    if strategy is Strategy.KNATIVE_SPLIT:
        revision = state.latest_created or ""
        return Subject(f"revision {revision}", f'revision="{revision}"', ready_revision(revision))
    if strategy is Strategy.GATEWAY_SPLIT:
        deployment = predictor_service_name(state.name, canary)
        return Subject(f"canary {canary}", f'pod=~"{deployment}-.*"', rollout.canary_healthy(canary, expected))
    new = [p for p in obs.pods if expected.matches(p.template)]
    restarts = {p.name: p.restarts for p in new}
    rolled = rollout.rolled_out(expected)

    def readiness(now: Observation) -> Progress:
        progress = rolled(now)
        if progress.phase is not Phase.DONE:
            return progress
        for p in now.pods:
            if p.name in restarts and p.restarts > restarts[p.name]:
                return wait(f"new pod {p.name} restarted {p.restarts - restarts[p.name]} times during the bake")
        return done(progress.detail)

    pods = "|".join(sorted(restarts)) or "none"
    return Subject(f"the new pods of {state.workload_name}", f'pod=~"{pods}"', readiness)
