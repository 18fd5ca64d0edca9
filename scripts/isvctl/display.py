"""Text the tool prints: patches exactly as sent, and the status summary."""

from __future__ import annotations

import json

from .isvc import API_VERSION, State


def patch_text(namespace: str, name: str, patch: dict) -> str:
    body = json.dumps(patch, indent=2, sort_keys=True)
    return f"PATCH {API_VERSION} InferenceService {namespace}/{name} (application/merge-patch+json)\n{body}"


def status_text(state: State) -> str:
    ready = state.conditions.get("Ready")
    ready_text = "Unknown" if ready is None else ready.status
    if ready is not None and ready.status != "True" and (ready.reason or ready.message):
        ready_text += f" ({ready.reason}: {ready.message})".replace(": )", ")")
    lines = [
        f"InferenceService {state.namespace}/{state.name} ({state.mode.value} mode)",
        f"  URL:          {state.url or '-'}",
        f"  Ready:        {ready_text}",
        f"  storageUri:   {state.storage_uri or '-'}",
    ]
    if state.canary_percent is not None:
        lines.append(f"  canary:       {state.canary_percent}% (canaryTrafficPercent)")
    if state.mode.splits_traffic:
        lines.append("  revisions:")
        for label, value in (
            ("latest created", state.latest_created),
            ("latest ready", state.latest_ready),
            ("rolled out", state.latest_rolledout),
            ("previous rolled out", state.previous_rolledout),
        ):
            lines.append(f"    {label + ':':<21}{value or '-'}")
        lines.append("  traffic:")
        for t in state.traffic or ():
            tag = f" [{t.tag}]" if t.tag else ""
            lines.append(f"    {t.percent:>3}%  {t.revision}{tag}")
        if not state.traffic:
            lines.append("    (none reported yet)")
    else:
        lines.append("  traffic:      100% to the predictor Deployment (Standard mode has no split)")
    return "\n".join(lines)


def dry_run_header(action: str) -> str:
    return f"# DRY RUN: {action}; nothing is sent to the cluster"
