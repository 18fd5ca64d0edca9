"""The soak run's verdict: every check, with what it saw."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .phases import bucket_at_or_above

# Recovery tolerance: the slowest 1% may be up to 3x baseline's, plus 50 ms for scheduler noise on small machines.
RECOVERY_FACTOR = 3.0
RECOVERY_SLACK_MS = 50.0
SHED_STATUSES = {503, 504}  # the server's own, documented answers to overload and to deadlines
DEADLINE_SLACK_MS = 1000  # on 2 CPU cores two batches of 8 take up to ~0.5 s


def evaluate(
    phases: dict[str, dict[str, Any]],
    memory: dict[str, Any],
    max_growth_pct: float,
    deadline_ms: float | None,
    histogram_bounds_s: Collection[float] = (),
) -> list[dict[str, Any]]:
    """`phases` are Phase summaries; `histogram_bounds_s` the request-time histogram's bucket bounds."""
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    bad_5xx = {
        p: {s: n for s, n in v["by_status"].items() if int(s) >= 500 and int(s) not in SHED_STATUSES}
        for p, v in phases.items()
    }
    check("no 5xx other than 503/504", not any(bad_5xx.values()), f"{bad_5xx}")
    other = {
        p: {s: n for s, n in v["by_status"].items() if int(s) not in (200, *SHED_STATUSES)} for p, v in phases.items()
    }
    check("only 200/503/504 answers", not any(other.values()), f"{other}")
    transport = {p: v["transport_errors"] for p, v in phases.items() if v["transport_errors"]}
    check("no transport errors (hangs, resets, timeouts)", not transport, f"{transport}")
    wrong = {p: v["wrong_answers"] for p, v in phases.items() if v["wrong_answers"]}
    check("every 200 is a correct answer", not wrong, f"{wrong}")
    missing = {p: v["missing_retry_after"] for p, v in phases.items() if v["missing_retry_after"]}
    check("every 503 has Retry-After", not missing, f"{missing}")
    overload = phases["overload"]["by_status"]
    check("overload shed load with 503", overload.get("503", 0) > 0, f"overload statuses {overload}")
    check("overload still served some requests", overload.get("200", 0) > 0, f"overload statuses {overload}")
    if deadline_ms is not None:
        # The deadline bounds a request's time inside the predictor (decode + queue, then 504); the batch
        # it joined still has to run. Measured by the server's own histogram, rounded up to its bucket:
        # the client's own clock also counts its wait for CPU on a machine the server saturates.
        server_max_s = phases["overload"]["server_max_s"]
        limit_s = (deadline_ms + DEADLINE_SLACK_MS) / 1000
        check(
            "overload: every request answered inside its deadline (server side)",
            server_max_s is not None and server_max_s <= bucket_at_or_above(histogram_bounds_s, limit_s),
            f"slowest request <= {server_max_s} s inside the predictor; deadline {deadline_ms:g} ms "
            f"+ {DEADLINE_SLACK_MS} ms for its batch (client saw up to {phases['overload']['ok_max_ms']} ms)",
        )
    for p in ("baseline", "recovery", "soak"):
        shed = {s: n for s, n in phases[p]["by_status"].items() if int(s) in SHED_STATUSES}
        check(f"{p}: nothing shed at low load", not shed, f"{shed}")
    base, rec = phases["baseline"]["p99_ms"], phases["recovery"]["p99_ms"]
    if base is None or rec is None:
        check("recovery p99 near baseline", False, f"no latencies (baseline {base}, recovery {rec})")
    else:
        limit = RECOVERY_FACTOR * base + RECOVERY_SLACK_MS
        check(
            "recovery p99 near baseline",
            rec <= limit,
            f"recovery p99 {rec} ms vs limit {limit:.1f} ms "
            f"(= {RECOVERY_FACTOR} x baseline p99 {base} + {RECOVERY_SLACK_MS})",
        )
    growth = memory.get("rss_growth_pct")
    check(
        "RSS growth over soak < limit",
        growth is not None and growth < max_growth_pct,
        f"{growth}% (limit {max_growth_pct}%), {memory.get('rss_start_mb')} -> {memory.get('rss_end_mb')} MB",
    )
    device = memory["device_growth_pct"]  # a percentage, or "n/a" without a GPU
    check("device memory growth over soak < limit", device == "n/a" or device < max_growth_pct, f"{device}")
    return checks
