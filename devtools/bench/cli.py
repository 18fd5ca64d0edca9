"""Benchmark the predictor: dynamic batching against max_batch_size=1, engine against plain model(x).

    python scripts/bench.py --model_dir models/efficientnet-lite0                  # `make bench`
    python scripts/bench.py --model_dir /tmp/lite0 --protocols grpc,rest,v1 --concurrency 1,8,32 --duration_s 10
    python scripts/bench.py --model_dir models/resnet50 --engine_only --engine_batch_size 256 \\
        --device cuda --precision bf16 --compile
    python scripts/bench.py --server_url http://host:8080 --grpc_url host:8081 --model_name NAME   # a running server

Network mode starts two servers on loopback (`--max_batch_size N` and `--max_batch_size 1`), then
for every protocol and concurrency runs one closed-loop step against each, interleaved so that
both see the same machine state: N clients send one image per request back to back for
--warmup_s (not measured) and then --duration_s (measured).  The batch-size histogram is read
from each server's /metrics at the start and the end of the measured window.
Engine mode (no network) times `Engine.predict_tensor` against plain `model(x)` on the same
preprocessed batch, device, dtype and memory format.
Writes bench.json and bench.png into --output_dir and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .clients import PIXELS, PROTOCOLS
from .engine import engine_bench, model_info
from .report import load_average, machine_info, plot, print_tables
from .sweep import batching_gain, hop_cost, network_sweep, servers, summarize
from .workload import load_image


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers >= 1, got {text!r}")
    return values


def _protocol_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    known = (*PROTOCOLS, PIXELS)
    unknown = sorted(set(values) - set(known))
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"protocols are a comma-separated subset of {','.join(known)}, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model_dir", help="Model artifact; needed unless --server_url is given (then only for engine mode)"
    )
    p.add_argument("--model_name", default="efficientnet-lite0", help="Name the model is served under")
    p.add_argument(
        "--protocols",
        type=_protocol_list,
        default=list(PROTOCOLS),
        help="grpc: v2 gRPC; rest: v2 REST binary; v1: v1 JSON base64; pixels: v2 gRPC, UINT8 already cropped",
    )
    p.add_argument("--concurrency", type=_int_list, default=[1, 8, 32], help="Closed-loop clients per step")
    p.add_argument("--duration_s", type=float, default=10.0, help="Measured time per step (and per engine variant)")
    p.add_argument("--warmup_s", type=float, default=2.0, help="Unmeasured load before each step's window")
    p.add_argument("--repeats", type=int, default=1, help="Runs of every step; the summary takes medians")
    p.add_argument(
        "--max_requests", type=int, default=100_000, help="Per step: the window closes early at this many requests"
    )
    p.add_argument("--max_batch_size", type=int, default=32, help="Batched server (the baseline always has 1)")
    p.add_argument("--max_latency_ms", type=float, default=5.0)
    p.add_argument(
        "--client_processes",
        type=int,
        default=1,
        help="Spread the clients over this many processes (for rates one Python process cannot send)",
    )
    p.add_argument(
        "--grpc_channels", type=int, default=1, help="gRPC connections the clients share; use several with --workers"
    )
    p.add_argument(
        "--server_args", default="", help="More predictor flags for both servers, e.g. '--max_concurrent_batches 1'"
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"), default=None, help="default: the server's (bf16 GPU, fp32 CPU)"
    )
    p.add_argument("--compile", action="store_true")
    p.add_argument(
        "--batch_buckets", default=None, help="With --compile, the batched server's buckets, e.g. 1,16,64,256"
    )
    p.add_argument(
        "--image", default="chelsea", help="chelsea (451x300 JPEG), chelsea-500x375, or a JPEG/PNG/WebP file"
    )
    p.add_argument("--engine_only", action="store_true", help="Only the engine comparison, no servers")
    p.add_argument("--skip_engine", action="store_true", help="Only the network benchmark")
    p.add_argument("--engine_batch_size", type=_int_list, default=None, help="default: 1 and --max_batch_size")
    p.add_argument("--profile", action="store_true", help="Engine mode: torch.profiler's top operators per batch size")
    p.add_argument("--skip_baseline", action="store_true", help="No max_batch_size=1 server")
    p.add_argument(
        "--hop",
        action="store_true",
        help="Hop mode: one predictor, called directly and through `python -m predictor.transformer` in front of "
        "it, step by step in one run (no baseline, no engine)",
    )
    p.add_argument("--transformer_args", default="", help="Hop mode: more transformer flags")
    p.add_argument("--output_dir", default="bench-results")
    p.add_argument(
        "--server_url", default=None, help="Bench this running server (REST base URL) instead of starting one"
    )
    p.add_argument(
        "--grpc_url", default=None, help="host:port of its gRPC endpoint; default: --server_url's host, port 8081"
    )
    return p


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.engine_only and args.skip_engine:
        parser.error("--engine_only and --skip_engine exclude each other")
    if args.hop:
        if args.server_url is not None or not args.model_dir:
            parser.error("--hop starts its own predictor and transformer: it needs --model_dir, not --server_url")
        args.skip_baseline = args.skip_engine = True
    if args.server_url is not None:
        args.skip_baseline = True  # a remote server's max_batch_size is not ours to change
        args.skip_engine = args.skip_engine or (args.model_dir is None and not args.engine_only)
    if not args.model_dir and (args.server_url is None or args.engine_only):
        parser.error("--model_dir is required (it may be omitted only with --server_url)")
    positive = ("duration_s", "repeats", "max_requests", "max_batch_size", "grpc_channels", "client_processes")
    if min(getattr(args, name) for name in positive) <= 0 or args.warmup_s < 0:
        parser.error(f"{', '.join('--' + name for name in positive)} must be > 0 and --warmup_s >= 0")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    image = load_image(args.image)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "model": model_info(args),
        "image": {"name": image.name, "width": image.width, "height": image.height, "bytes": len(image.data)},
        "args": vars(args),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if not args.engine_only:
        with servers(args, output_dir) as targets:
            print(
                f"network sweep: {', '.join(t.config for t in targets)} x {args.protocols} x c={args.concurrency}",
                flush=True,
            )
            steps, top_classes = asyncio.run(network_sweep(targets, args, image))
        summary = summarize(steps)
        report.update(
            top_class=top_classes,
            steps=[asdict(s) for s in steps],
            summary=summary,
            batching_gain=batching_gain(summary),
            hop_cost=hop_cost(summary),
        )
    if not args.skip_engine:
        print("engine only:", flush=True)
        report["engine"] = engine_bench(args)
    report["machine"]["load_average_at_end"] = load_average()
    (output_dir / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, output_dir / "bench.png")
    print_tables(report)
    print(f"\nwrote {output_dir / 'bench.json'} and {output_dir / 'bench.png'}")
    return 0
