"""Where a rollout stands: what the wait loop and the status readers report to each other."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Phase(enum.Enum):
    DONE = "done"
    WAIT = "wait"
    FAILED = "failed"


@dataclass(frozen=True)
class Progress:
    phase: Phase
    detail: str


def done(detail: str) -> Progress:
    return Progress(Phase.DONE, detail)


def wait(detail: str) -> Progress:
    return Progress(Phase.WAIT, detail)


def failed(detail: str) -> Progress:
    return Progress(Phase.FAILED, detail)
