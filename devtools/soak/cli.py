"""Bounded overload-and-soak run against a real predictor on loopback.

Phases, each a fixed duration of closed-loop load (N workers, each sending the next
v1 :predict of a reference JPEG as soon as the last one answers):

  baseline  low load: the latency the server gives when it is not busy
  overload  ~5x what the server can hold in flight, against a small --max_queue_size,
            so the queue fills and the surplus is shed with 503 + Retry-After
  recovery  low load again, right after: latency must come back near baseline
  soak      steady moderate load: process RSS (and device memory on CUDA) must not grow

Pass/fail (exit status 1 on any failure, 0 otherwise), all written to a JSON report:
  - no 5xx other than 503 (overload) and 504 (deadline); no transport errors (a hang, a reset)
  - every 503 carries Retry-After; the overload phase did shed load (else it proved nothing)
    and still answered some requests with 200
  - every 200 is a correct answer (a cat class in the top 3)
  - recovery p99 <= RECOVERY_FACTOR x baseline p99 + RECOVERY_SLACK_MS
  - RSS growth over the soak phase < --max_memory_growth (5%); device memory likewise, or "n/a"

    python scripts/soak.py --model_dir models/efficientnet-lite0                 # starts its own server
    python scripts/soak.py --server_url http://127.0.0.1:8080 --server_pid 1234  # an existing one
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from .. import launcher, payloads
from ..photos import jpeg
from .checks import RECOVERY_FACTOR, RECOVERY_SLACK_MS, evaluate
from .phases import Phase, request_seconds_buckets, run_phase, slowest_bucket_s, soak_phase


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="soak.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--server_url", default=None, help="Use this running server instead of starting one")
    p.add_argument("--server_pid", type=int, default=None, help="With --server_url: its pid, for RSS")
    p.add_argument("--model_name", default="classifier")
    p.add_argument("--baseline_s", type=float, default=20)
    p.add_argument("--overload_s", type=float, default=30)
    p.add_argument("--recovery_s", type=float, default=20)
    p.add_argument("--soak_s", type=float, default=120)
    p.add_argument("--low_concurrency", type=int, default=1, help="Workers in baseline and recovery")
    p.add_argument("--soak_concurrency", type=int, default=2)
    p.add_argument("--overload_factor", type=float, default=5.0, help="Workers = factor x images the server holds")
    p.add_argument("--request_timeout_s", type=float, default=30, help="Per request (a hang fails the run)")
    p.add_argument("--max_memory_growth_pct", type=float, default=5.0)
    p.add_argument("--report", default="soak-report.json")
    server = p.add_argument_group("the server this script starts (not with --server_url)")
    server.add_argument("--model_dir", default="models/efficientnet-lite0", help="Its model artifact")
    server.add_argument("--max_batch_size", type=int, default=8)
    server.add_argument("--max_concurrent_batches", type=int, default=2)
    server.add_argument("--max_queue_size", type=int, default=16, help="Small, so that 503s happen")
    server.add_argument("--server_request_timeout_ms", type=float, default=1000, help="Queued longer is a 504")
    return p


async def run(args: argparse.Namespace, base_url: str, pid: int | None) -> dict[str, Any]:
    url = base_url + payloads.v1_path(args.model_name)
    body = payloads.to_json(payloads.v1_body(jpeg("chelsea"), top_k=3, bare=True))
    # What the server holds before it sheds: the queue plus the batches being worked on.
    capacity = args.max_queue_size + args.max_batch_size * args.max_concurrent_batches
    overload_concurrency = max(int(args.overload_factor * capacity), capacity + 1)
    phases: dict[str, Phase] = {}
    buckets: dict[float, float] = {}
    for name, duration, concurrency in (
        ("baseline", args.baseline_s, args.low_concurrency),
        ("overload", args.overload_s, overload_concurrency),
        ("recovery", args.recovery_s, args.low_concurrency),
    ):
        print(f"[soak] {name}: {duration} s at concurrency {concurrency}", flush=True)
        before = request_seconds_buckets(base_url)
        phases[name] = await run_phase(url, body, Phase(name, duration, concurrency), args.request_timeout_s)
        buckets = request_seconds_buckets(base_url)
        phases[name].server_max_s = slowest_bucket_s(before, buckets)
        print(f"[soak]   {phases[name].summary()}", flush=True)
    print(f"[soak] soak: {args.soak_s} s at concurrency {args.soak_concurrency}", flush=True)
    phases["soak"] = Phase("soak", args.soak_s, args.soak_concurrency)
    memory = await soak_phase(url, base_url, body, phases["soak"], pid, args.request_timeout_s)
    print(f"[soak]   {phases['soak'].summary()}\n[soak]   memory {memory}", flush=True)
    summaries = {name: p.summary() for name, p in phases.items()}
    deadline_ms = None if args.server_url else args.server_request_timeout_ms
    checks = evaluate(summaries, memory, args.max_memory_growth_pct, deadline_ms, buckets.keys())
    return {
        "ok": all(c["ok"] for c in checks),
        "checks": checks,
        "phases": summaries,
        "memory": memory,
        "config": {
            **vars(args),
            "overload_concurrency": overload_concurrency,
            "server_holds": capacity,
            "recovery_tolerance": f"p99 <= {RECOVERY_FACTOR} x baseline p99 + {RECOVERY_SLACK_MS} ms",
        },
    }


def _start_server(args: argparse.Namespace) -> launcher.RunningServer:
    print(f"[soak] starting the predictor on loopback ({args.model_dir})", flush=True)
    flags = {
        "--max_batch_size": args.max_batch_size,
        "--max_concurrent_batches": args.max_concurrent_batches,
        "--max_queue_size": args.max_queue_size,
        "--max_latency_ms": 2,
        "--request_timeout_ms": args.server_request_timeout_ms,
    }
    return launcher.start(args.model_dir, *(str(x) for kv in flags.items() for x in kv), model_name=args.model_name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    running = None
    started = time.monotonic()
    if args.server_url:
        base_url, pid = args.server_url.rstrip("/"), args.server_pid
    else:
        running = _start_server(args)
        base_url, pid = running.base_url, running.process.pid
    try:
        report = asyncio.run(run(args, base_url, pid))
        if running is not None:
            report["server_alive_after"] = running.process.poll() is None
            if not report["server_alive_after"]:
                report["ok"] = False
                report["checks"].append({"check": "server alive after", "ok": False, "detail": running.log()[-2000:]})
    finally:
        if running is not None:
            running.stop()
    report["total_wall_s"] = round(time.monotonic() - started, 1)
    Path(args.report).write_text(json.dumps(report, indent=2, default=str))
    for c in report["checks"]:
        print(f"[soak] {'PASS' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}")
    print(f"[soak] {'OK' if report['ok'] else 'FAILED'}; report: {args.report} ({report['total_wall_s']} s)")
    return 0 if report["ok"] else 1
