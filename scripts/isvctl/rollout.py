"""Waiting for an InferenceService to reach a target state, with progress and a timeout.

The targets are pure predicates over isvc.State: DONE, WAIT (with what we wait for) or FAILED.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from . import isvc
from .clock import Clock
from .cluster import Cluster
from .errors import RolloutFailed


class Phase(enum.Enum):
    DONE = "done"
    WAIT = "wait"
    FAILED = "failed"


@dataclass(frozen=True)
class Progress:
    phase: Phase
    detail: str


Target = Callable[[isvc.State], Progress]


def _failed_or(state: isvc.State) -> Progress | None:
    failure = state.failure()
    return Progress(Phase.FAILED, failure) if failure else None


def ready(state: isvc.State) -> Progress:
    """Any mode: the controller has seen the latest spec and reports Ready with the model loaded."""
    if failed := _failed_or(state):
        return failed
    if not state.up_to_date:
        return Progress(Phase.WAIT, f"controller has not seen generation {state.generation} yet")
    if state.model_transition not in (None, "UpToDate"):
        return Progress(Phase.WAIT, f"model {state.model_transition}")
    if not state.ready:
        cond = state.conditions.get("Ready")
        return Progress(Phase.WAIT, f"Ready={cond.status} {cond.reason}".rstrip() if cond else "no Ready condition yet")
    return Progress(Phase.DONE, "Ready")


def new_revision(before: str | None, percent: int) -> Target:
    """Serverless: a revision other than `before` is created, ready, and has `percent` of traffic."""

    def target(state: isvc.State) -> Progress:
        if failed := _failed_or(state):
            return failed
        if state.latest_created in (None, before):
            return Progress(Phase.WAIT, "waiting for the new revision to be created")
        if state.latest_ready != state.latest_created:
            return Progress(Phase.WAIT, f"revision {state.latest_created} starting")
        got = state.percent_of(state.latest_created)
        if got != percent:
            return Progress(Phase.WAIT, f"revision {state.latest_created} ready, traffic {got}% (want {percent}%)")
        return Progress(Phase.DONE, f"revision {state.latest_created} ready with {percent}% of traffic")

    return target


def traffic_at(revision: str, percent: int) -> Target:
    """Serverless: `revision` serves `percent` of traffic (after a traffic-only patch)."""

    def target(state: isvc.State) -> Progress:
        if failed := _failed_or(state):
            return failed
        got = state.percent_of(revision)
        if got != percent:
            return Progress(Phase.WAIT, f"revision {revision} at {got}% (want {percent}%)")
        return Progress(Phase.DONE, f"revision {revision} at {percent}%")

    return target


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
) -> isvc.State:
    """Poll until `target` is DONE; on FAILED or timeout raise RolloutFailed with pod events."""
    deadline_s = clock.now_s() + timeout_s
    last_detail = None
    while True:
        state = isvc.parse(cluster.get_isvc(namespace, name))
        progress = target(state)
        if progress.phase is Phase.DONE:
            say(f"  ✓ {progress.detail}")
            return state
        if progress.phase is Phase.FAILED:
            raise RolloutFailed(_explain(cluster, state, progress.detail))
        if progress.detail != last_detail:
            say(f"  … {progress.detail}")
            last_detail = progress.detail
        if clock.now_s() >= deadline_s:
            raise RolloutFailed(_explain(cluster, state, f"timed out after {timeout_s:.0f} s: {progress.detail}"))
        clock.sleep(poll_s)


def _explain(cluster: Cluster, state: isvc.State, why: str) -> str:
    revision = state.latest_created if state.mode.splits_traffic else None
    lines = [f"{state.namespace}/{state.name}: {why}"]
    for cond in state.conditions.values():
        if cond.status != "True" and cond.message and cond.message not in why:
            lines.append(f"  {cond.type}: {cond.reason}: {cond.message}")
    events = cluster.pod_events(state.namespace, state.name, revision)
    if events:
        lines.append("recent pod events:")
        lines.extend(f"  {e}" for e in events)
    return "\n".join(lines)
