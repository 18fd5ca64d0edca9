"""The canary state machine: shift traffic step by step, bake, gate, and roll back on failure.

    start ─▶ step(p₁) ─▶ bake ─▶ gate ─pass─▶ step(p₂) … ─▶ [last step 100 %] ─▶ promote
                │                  └─fail─▶ rollback ─▶ GateFailed
                └─revision fails / times out─▶ rollback ─▶ RolloutFailed

Serverless mode moves canaryTrafficPercent through the steps. Standard mode has no traffic split
(one Deployment), so the new model rolls out to every replica as one step and is gated the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import isvc, patches, rollout
from .clock import Clock
from .cluster import Cluster
from .display import patch_text
from .errors import DeployError, GateFailed, RolloutFailed
from .gates import Gate


@dataclass(frozen=True)
class CanaryPlan:
    storage_uri: str | None
    image: str | None
    steps_percent: tuple[int, ...]
    bake_time_s: float
    timeout_s: float
    poll_s: float = 5.0

    def steps_for(self, mode: isvc.Mode) -> tuple[int | None, ...]:
        # None: no canaryTrafficPercent at all (Standard mode replaces every replica).
        return self.steps_percent if mode.splits_traffic else (None,)

    @property
    def promotes(self) -> bool:
        return self.steps_percent[-1] == 100


def parse_steps(steps: str, default_percent: int) -> tuple[int, ...]:
    """'10,50,100' -> (10, 50, 100); empty -> (default_percent,). Steps must rise within 1..100."""
    if not steps.strip():
        return (patches.check_percent(default_percent),)
    try:
        values = tuple(int(part) for part in steps.split(","))
    except ValueError:
        raise DeployError(f"CANARY_STEPS must be comma-separated integers like 10,50,100, got {steps!r}") from None
    if any(not 1 <= v <= 100 for v in values) or list(values) != sorted(set(values)):
        raise DeployError(f"CANARY_STEPS must rise strictly within 1..100, got {steps!r}")
    return values


def describe(current: isvc.State, plan: CanaryPlan, gate: Gate) -> list[str]:
    """What `run` would send, in order: the dry-run output."""
    ns, name = current.namespace, current.name
    lines = [f"# canary of {ns}/{name} ({current.mode.value} mode), serving {current.storage_uri} now"]
    steps = plan.steps_for(current.mode)
    if not current.mode.splits_traffic and plan.steps_percent != (100,):
        lines.append("# Standard mode cannot split traffic: the new model replaces every replica in one step")
    for i, percent in enumerate(steps, 1):
        patch = (
            patches.canary(current, storage_uri=plan.storage_uri, image=plan.image, percent=percent)
            if i == 1
            else patches.traffic(percent)
        )
        share = f"{percent}% of traffic" if percent is not None else "all replicas"
        lines.append(f"# step {i}/{len(steps)}: {share} to the new model")
        lines.append(patch_text(ns, name, patch))
        lines.append(
            f"# then wait up to {plan.timeout_s:.0f} s for it, bake {plan.bake_time_s:.0f} s, gate on {gate.describe()}"
        )
    if current.mode.splits_traffic and plan.promotes:
        lines.append("# after the last gate passes: promote")
        lines.append(patch_text(ns, name, patches.promote()))
    lines.append("# if a step fails: roll back")
    lines.append(patch_text(ns, name, _rollback_patch(current, plan)))
    return lines


def _rollback_patch(current: isvc.State, plan: CanaryPlan) -> patches.Patch:
    """The rollback for the state right after the canary patch (annotations recorded by it)."""
    after = patches.canary(current, storage_uri=plan.storage_uri, image=plan.image, percent=None)
    annotations = {**current.annotations, **after.get("metadata", {}).get("annotations", {})}
    return patches.rollback(_with_annotations(current, annotations))


def _with_annotations(state: isvc.State, annotations: dict) -> isvc.State:
    from dataclasses import replace

    return replace(state, annotations={k: v for k, v in annotations.items() if v is not None})


def run(
    cluster: Cluster,
    current: isvc.State,
    plan: CanaryPlan,
    gate: Gate,
    *,
    clock: Clock,
    say: Callable[[str], None],
) -> isvc.State:
    ns, name, mode = current.namespace, current.name, current.mode
    rollback_patch = _rollback_patch(current, plan)
    steps = plan.steps_for(mode)
    if not mode.splits_traffic and plan.steps_percent != (100,):
        say("Standard mode cannot split traffic: the new model replaces every replica in one step")

    def wait(target: rollout.Target) -> isvc.State:
        return rollout.wait_for(
            cluster, ns, name, target, timeout_s=plan.timeout_s, poll_s=plan.poll_s, clock=clock, say=say
        )

    def roll_back(canary_revision: str | None) -> str:
        say("rolling back")
        cluster.patch_isvc(ns, name, rollback_patch)
        target = _restored(canary_revision) if mode.splits_traffic else _restored_standard
        state = wait(target)
        where = next((t.revision for t in state.traffic if t.percent == 100), None) or state.storage_uri
        return f"rolled back: all traffic on {where}"

    canary_revision: str | None = None
    for i, percent in enumerate(steps, 1):
        share = f"{percent}% of traffic" if percent is not None else "all replicas"
        say(f"step {i}/{len(steps)}: {share} to {plan.storage_uri or plan.image}")
        if i == 1:
            cluster.patch_isvc(
                ns, name, patches.canary(current, storage_uri=plan.storage_uri, image=plan.image, percent=percent)
            )
            target = rollout.new_revision(current.latest_created, percent) if mode.splits_traffic else rollout.ready
        else:
            cluster.patch_isvc(ns, name, patches.traffic(percent))
            target = rollout.traffic_at(canary_revision, percent)
        try:
            state = wait(target)
        except RolloutFailed as exc:
            failed = isvc.parse(cluster.get_isvc(ns, name))
            raise RolloutFailed(f"{exc}\n{roll_back(failed.latest_created)}") from None
        canary_revision = state.latest_created if mode.splits_traffic else None
        say(f"  baking {plan.bake_time_s:.0f} s")
        clock.sleep(plan.bake_time_s)
        verdict = gate.check(isvc.parse(cluster.get_isvc(ns, name)), canary_revision, plan.bake_time_s)
        say(f"  gate {'passed' if verdict.passed else 'FAILED'}: {verdict.summary}")
        if not verdict.passed:
            where = f" at {percent}%" if percent is not None else ""
            raise GateFailed(f"canary gate failed{where}: {verdict.summary}\n{roll_back(canary_revision)}")
    if mode.splits_traffic and plan.promotes:
        say("promoting")
        cluster.patch_isvc(ns, name, patches.promote())
        state = wait(rollout.ready)
    elif mode.splits_traffic:
        say(f"canary holds {steps[-1]}% of traffic: `make promote` to finish, `make rollback` to abort")
    return state


def _restored(canary_revision: str | None) -> rollout.Target:
    # No failure check here: the failed revision's conditions linger, and we only need traffic off it.
    def target(state: isvc.State) -> rollout.Progress:
        got = state.percent_of(canary_revision)
        if got:
            return rollout.Progress(rollout.Phase.WAIT, f"revision {canary_revision} still at {got}%")
        return rollout.Progress(rollout.Phase.DONE, f"revision {canary_revision} at 0%")

    return target


def _restored_standard(state: isvc.State) -> rollout.Progress:
    if not state.up_to_date or not state.ready or state.model_transition not in (None, "UpToDate"):
        return rollout.Progress(rollout.Phase.WAIT, "previous model rolling out again")
    return rollout.Progress(rollout.Phase.DONE, f"serving {state.storage_uri} again")
