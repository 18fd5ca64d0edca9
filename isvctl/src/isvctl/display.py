"""Text the tool prints: patches exactly as sent, and the status summary."""

from __future__ import annotations

import json
from typing import Any

from .isvc import API_VERSION, Mode
from .observe import Observation
from .workload import rollout_status


def patch_text(namespace: str, name: str, patch: dict[str, Any]) -> str:
    body = json.dumps(patch, indent=2, sort_keys=True)
    return f"PATCH {API_VERSION} InferenceService {namespace}/{name} (application/merge-patch+json)\n{body}"


def status_text(obs: Observation) -> str:
    state = obs.isvc
    ready = state.conditions.get("Ready")
    ready_text = "Unknown" if ready is None else ready.status
    if ready is not None and ready.status != "True" and (ready.reason or ready.message):
        ready_text += f" ({ready.reason}: {ready.message})".replace(": )", ")")
    mode = state.mode.value if state.mode else "not reconciled yet"
    lines = [
        f"InferenceService {state.namespace}/{state.name} ({mode} mode)",
        f"  URL:          {state.url or '-'}",
        f"  Ready:        {ready_text}",
        f"  storageUri:   {state.storage_uri or '-'}",
    ]
    if state.image:
        lines.append(f"  image:        {state.image}")
    if state.canary_percent is not None:
        lines.append(f"  canary:       {state.canary_percent}% (canaryTrafficPercent)")
    if state.mode is Mode.KNATIVE:
        lines.append("  revisions:")
        for label, value in (
            ("latest created", state.latest_created),
            ("latest ready", state.latest_ready),
            ("rolled out", state.latest_rolledout),
            ("previous rolled out", state.previous_rolledout),
        ):
            lines.append(f"    {label + ':':<21}{value or '-'}")
        lines.append("  traffic:")
        for t in state.traffic:
            tag = f" [{t.tag}]" if t.tag else ""
            lines.append(f"    {t.percent:>3}%  {t.revision}{tag}")
        if not state.traffic:
            lines.append("    (none reported yet)")
        return "\n".join(lines)
    deployment = obs.deployment(state.workload_name)
    rollout = rollout_status(deployment).detail if deployment else f"Deployment {state.workload_name} not found"
    lines.append(f"  rollout:      {rollout}")
    for canary in state.canaries:
        status = state.canary_status(canary.name)
        ready_word = "ready" if status and status.ready else "not ready"
        lines.append(
            f"  canary:       {canary.name} {canary.percent}% {canary.storage_uri or canary.image} ({ready_word})"
        )
    if obs.route is not None:
        split = ", ".join(f"{weight}% {backend}" for backend, weight in sorted(obs.route.items()))
        lines.append(f"  traffic:      {split} (HTTPRoute)")
    else:
        lines.append(f"  traffic:      100% to Deployment {state.workload_name} (no Gateway API route: no split)")
    return "\n".join(lines)


def dry_run_header(action: str) -> str:
    return f"# DRY RUN: {action}; nothing is sent to the cluster"
