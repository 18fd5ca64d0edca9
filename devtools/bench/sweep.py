"""The network sweep: a batched server and a max_batch_size=1 baseline on loopback, both up for the
whole run; for every protocol and concurrency one step against each, interleaved, so that both
see the same machine state. The batch-size histogram and stage times come from each server's
own /metrics at the start and the end of the measured window."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import statistics
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .. import payloads
from ..launcher import RunningServer, launch
from ..metrics import Metrics, scrape_async
from .clients import PIXELS, ClientSpec, GrpcClient, HttpClient, build_client
from .load import Probes, StepPlan, client_pool, latency_summary, run_step, run_step_in_processes
from .report import step_line
from .workload import BenchImage

BATCHED, BASELINE = "batched", "baseline"
# Hop mode: the predictor called directly, and the same predictor through a transformer.
DIRECT, HOP = "direct", "hop"
BATCH_SIZE_METRIC = "predictor_batch_size"
STAGES = ("decode", "preprocess", "inference", "postprocess")
SERVER_READY_TIMEOUT_S = 600.0  # --compile on a GPU compiles and captures every batch bucket first
DEFAULT_GRPC_PORT = 8081


@dataclass
class Target:
    config: str  # BATCHED or BASELINE, or DIRECT or HOP
    base_url: str
    grpc_target: str
    # The processes that serve this target (a transformer and its predictor for HOP); none: a
    # server this benchmark did not start.
    servers: list[RunningServer] = field(default_factory=list)
    metrics_url: str | None = None  # whose /metrics a step reads (the predictor's); default base_url

    def cpu_s(self) -> float | None:
        if not self.servers:
            return None
        used = [s.cpu_s() for s in self.servers]
        return None if None in used else sum(u for u in used if u is not None)


@dataclass
class StepResult:
    config: str
    protocol: str
    concurrency: int
    repeat: int
    window_s: float
    requests_ok: int
    images_per_s: float
    latency_ms: dict[str, float | None]
    errors: dict[str, int]  # by status, over the whole step (warm-up and drain included)
    errors_total: int
    batch_size: dict[str, Any] | None
    stage_ms: dict[str, Any] | None  # server-side pipeline stages, from /metrics
    server_cpu_s: float | None  # CPU the server burned in the window, and the load generator:
    client_cpu_s: float  # on a shared small machine the client's share is capacity the server lacks
    other_cpu_s: float | None  # every other process (e.g. the idle second server, other jobs): noise


# ----------------------------------------------------------------------------- servers


def _launch(config: str, args: argparse.Namespace, max_batch_size: int, output_dir: Path) -> RunningServer:
    flags = [
        "--max_batch_size",
        str(max_batch_size),
        "--max_latency_ms",
        str(args.max_latency_ms),
        "--device",
        args.device,
        *(["--precision", args.precision] if args.precision else []),
        *(["--compile"] if args.compile else []),
        *(
            ["--batch_buckets", args.batch_buckets]
            if args.compile and args.batch_buckets and max_batch_size > 1
            else []
        ),
        *shlex.split(args.server_args),
    ]
    log_path = output_dir / f"server-{config}.log"
    return launch(args.model_dir, *flags, model_name=args.model_name, log_path=log_path, threads=None)


def _launch_transformer(args: argparse.Namespace, predictor: RunningServer, output_dir: Path) -> RunningServer:
    flags = ["--predictor_host", predictor.grpc_url, "--max_batch_size", str(args.max_batch_size)]
    flags += shlex.split(args.transformer_args)
    log_path = output_dir / "server-transformer.log"
    return launch(
        args.model_dir,
        *flags,
        model_name=args.model_name,
        log_path=log_path,
        threads=None,
        module="predictor.transformer",
    )


@contextlib.contextmanager
def hop_servers(args: argparse.Namespace, output_dir: Path) -> Iterator[list[Target]]:
    """One predictor, and a transformer in front of it: the same predictor reached directly and
    through the hop, both read from the predictor's /metrics."""
    started: list[RunningServer] = []
    try:
        predictor = _launch(DIRECT, args, args.max_batch_size, output_dir)
        started.append(predictor)
        transformer = _launch_transformer(args, predictor, output_dir)
        started.append(transformer)
        for server in started:
            server.wait_ready(SERVER_READY_TIMEOUT_S)
        yield [
            Target(DIRECT, predictor.base_url, predictor.grpc_url, [predictor], predictor.base_url),
            Target(HOP, transformer.base_url, transformer.grpc_url, [predictor, transformer], predictor.base_url),
        ]
    finally:
        for server in reversed(started):
            server.stop()


@contextlib.contextmanager
def servers(args: argparse.Namespace, output_dir: Path) -> Iterator[list[Target]]:
    if args.hop:
        with hop_servers(args, output_dir) as targets:
            yield targets
        return
    if args.server_url is not None:
        grpc_target = args.grpc_url or f"{httpx.URL(args.server_url).host}:{DEFAULT_GRPC_PORT}"
        yield [Target(BATCHED, args.server_url.rstrip("/"), grpc_target)]
        return
    configs = [(BATCHED, args.max_batch_size)] + ([] if args.skip_baseline else [(BASELINE, 1)])
    started: list[RunningServer] = []
    try:
        # Both start (load + warm-up) in parallel, then both stay up so every step pair is side by side.
        for config, size in configs:
            started.append(_launch(config, args, size, output_dir))
        for server in started:
            server.wait_ready(SERVER_READY_TIMEOUT_S)
        yield [Target(config, s.base_url, s.grpc_url, [s]) for (config, _), s in zip(configs, started, strict=True)]
    finally:
        for server in started:
            server.stop()


# ----------------------------------------------------------------------------- what the server saw


def batch_distribution(before: Metrics | None, after: Metrics | None) -> dict[str, Any] | None:
    """Batches dispatched between two scrapes: mean size and how many fell in each bucket (not cumulative)."""
    if before is None or after is None:
        return None
    window = after - before
    batches = window.get(f"{BATCH_SIZE_METRIC}_count", 0.0)
    images = window.get(f"{BATCH_SIZE_METRIC}_sum", 0.0)
    per_bucket, previous = {}, 0.0
    for le, cumulative in window.buckets(BATCH_SIZE_METRIC).items():  # ascending upper bounds
        per_bucket[le if le == "+Inf" else f"{float(le):g}"] = int(round(cumulative - previous))
        previous = cumulative
    return {
        "batches": int(round(batches)),
        "images": int(round(images)),
        "mean": round(images / batches, 2) if batches else None,
        "buckets": per_bucket,
    }


def stage_times_ms(before: Metrics | None, after: Metrics | None) -> dict[str, Any] | None:
    """Where the server's time went between two scrapes: each pipeline stage per batch and per image."""
    if before is None or after is None:
        return None
    window = after - before
    images = window.get(f"{BATCH_SIZE_METRIC}_sum", 0.0)
    out: dict[str, Any] = {}
    for stage in STAGES:
        seconds = window.get("predictor_stage_seconds_sum", 0.0, stage=stage)
        batches = window.get("predictor_stage_seconds_count", 0.0, stage=stage)
        out[stage] = {"per_batch": _ms(seconds, batches), "per_image": _ms(seconds, images)}
    waits = window.get("predictor_queue_wait_seconds_count", 0.0)
    out["queue_wait_mean"] = _ms(window.get("predictor_queue_wait_seconds_sum", 0.0), waits)
    return out


def _ms(seconds: float | None, count: float | None) -> float | None:
    return round(seconds * 1000 / count, 2) if seconds is not None and count else None


# ----------------------------------------------------------------------------- the sweep


def _grpc_request(protocol: str, args: argparse.Namespace, image: BenchImage) -> bytes:
    if protocol == "grpc":
        return payloads.grpc_request_bytes(args.model_name, image.data)
    if protocol == PIXELS:
        return payloads.grpc_pixels_request_bytes(args.model_name, cropped_pixels(args.model_dir, image.data))
    return b""


def cropped_pixels(model_dir: str | None, data: bytes) -> Any:
    """The image decoded, resized and cropped as the model's transform does it: uint8 [1, S, S, 3]."""
    if model_dir is None:
        raise SystemExit("the pixels protocol needs --model_dir: the crop size and resize are the model's")
    from predictor.artifact import read_spec
    from predictor.imaging import decode_cpu
    from predictor.preprocess import EvalTransform

    chw = EvalTransform.from_spec(read_spec(model_dir)).resize_crop(decode_cpu(data))
    return chw.permute(1, 2, 0).contiguous().numpy()[None]


def _client_spec(target: Target, protocol: str, args: argparse.Namespace, image: BenchImage) -> ClientSpec:
    return ClientSpec(
        protocol=protocol,
        base_url=target.base_url,
        grpc_target=target.grpc_target,
        model_name=args.model_name,
        image=image.data,
        grpc_request=_grpc_request(protocol, args, image),
        grpc_channels=args.grpc_channels,
        max_connections=max(args.concurrency),
    )


async def network_sweep(
    targets: list[Target], args: argparse.Namespace, image: BenchImage
) -> tuple[list[StepResult], dict[str, str]]:
    """Every repeat x protocol x concurrency, one step per server; also each path's top class."""
    specs = {(t.config, p): _client_spec(t, p, args, image) for t in targets for p in args.protocols}
    clients = {key: build_client(spec) for key, spec in specs.items()}
    metrics_client = httpx.AsyncClient(timeout=10)
    pool = client_pool(args.client_processes)
    try:
        # One request per path first: a broken protocol fails here, loudly, not as a sweep of errors.
        top_classes = {f"{config}/{p}": await c.top_class() for (config, p), c in clients.items()}
        steps = []
        for repeat in range(args.repeats):
            for protocol in args.protocols:
                for concurrency in args.concurrency:
                    for target in targets:
                        key = (target.config, protocol)
                        step = await _one_step(
                            target, protocol, concurrency, repeat, clients[key], specs[key], pool, metrics_client, args
                        )
                        print(step_line(step), flush=True)
                        steps.append(step)
        return steps, top_classes
    finally:
        for c in clients.values():
            await c.close()
        await metrics_client.aclose()
        if pool is not None:
            pool.shutdown()


async def _one_step(
    target: Target,
    protocol: str,
    concurrency: int,
    repeat: int,
    client: GrpcClient | HttpClient,
    spec: ClientSpec,
    pool: ProcessPoolExecutor | None,
    metrics_client: httpx.AsyncClient,
    args: argparse.Namespace,
) -> StepResult:
    plan = StepPlan(concurrency, args.warmup_s, args.duration_s, args.max_requests)
    probes = Probes(lambda: scrape_async(metrics_client, target.metrics_url or target.base_url), target.cpu_s)
    if pool is None or concurrency < args.client_processes:
        window = await run_step(client.send, plan, probes)
    else:
        window = await run_step_in_processes(pool, spec, args.client_processes, plan, probes)
    return StepResult(
        config=target.config,
        protocol=protocol,
        concurrency=concurrency,
        repeat=repeat,
        window_s=round(window.seconds, 3),
        requests_ok=len(window.latencies_ms),
        images_per_s=round(len(window.latencies_ms) / window.seconds, 2) if window.seconds > 0 else 0.0,
        latency_ms=latency_summary(window.latencies_ms),
        errors=dict(window.errors),
        errors_total=sum(window.errors.values()),
        batch_size=batch_distribution(window.before, window.after),
        stage_ms=stage_times_ms(window.before, window.after),
        server_cpu_s=window.cpu_s["server"],
        client_cpu_s=window.cpu_s["client"],
        other_cpu_s=window.cpu_s["other"],
    )


# ----------------------------------------------------------------------------- summary


def summarize(steps: list[StepResult]) -> list[dict[str, Any]]:
    """Medians over repeats, per (config, protocol, concurrency)."""
    groups: dict[tuple[str, str, int], list[StepResult]] = {}
    for s in steps:
        groups.setdefault((s.config, s.protocol, s.concurrency), []).append(s)
    return [
        {
            "config": config,
            "protocol": protocol,
            "concurrency": concurrency,
            "repeats": len(group),
            "images_per_s": _median([s.images_per_s for s in group]),
            "latency_ms": {q: _median([s.latency_ms[q] for s in group]) for q in ("p50", "p90", "p99")},
            "mean_batch_size": _median([(s.batch_size or {}).get("mean") for s in group]),
            "stage_ms_per_image": {
                stage: _median([(s.stage_ms or {}).get(stage, {}).get("per_image") for s in group]) for stage in STAGES
            },
            "errors_total": sum(s.errors_total for s in group),
        }
        for (config, protocol, concurrency), group in groups.items()
    ]


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def _paired(
    summary: list[dict[str, Any]], config: str, against: str
) -> Iterator[tuple[str, int, dict[str, Any], dict[str, Any]]]:
    """(protocol, concurrency, `config`'s row, `against`'s row) for every step both configs ran."""
    by_key = {(r["config"], r["protocol"], r["concurrency"]): r for r in summary}
    for (name, protocol, concurrency), row in by_key.items():
        other = by_key.get((against, protocol, concurrency))
        if name == config and other is not None:
            yield protocol, concurrency, row, other


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def hop_cost(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Through the transformer against direct, per protocol and concurrency: what the hop adds."""
    costs = []
    for protocol, concurrency, hop, direct in _paired(summary, HOP, DIRECT):
        added = {
            q: round(hop["latency_ms"][q] - direct["latency_ms"][q], 2)
            if hop["latency_ms"][q] is not None and direct["latency_ms"][q] is not None
            else None
            for q in ("p50", "p99")
        }
        costs.append(
            {
                "protocol": protocol,
                "concurrency": concurrency,
                "direct_images_per_s": direct["images_per_s"],
                "hop_images_per_s": hop["images_per_s"],
                "throughput_ratio": _ratio(hop["images_per_s"], direct["images_per_s"]),
                "direct_latency_ms": direct["latency_ms"],
                "hop_latency_ms": hop["latency_ms"],
                "added_ms": added,
                "direct_mean_batch": direct["mean_batch_size"],
                "hop_mean_batch": hop["mean_batch_size"],
            }
        )
    return costs


def batching_gain(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Batched against baseline images/s, per protocol and concurrency."""
    return [
        {
            "protocol": protocol,
            "concurrency": concurrency,
            "batched_images_per_s": batched["images_per_s"],
            "baseline_images_per_s": baseline["images_per_s"],
            "ratio": _ratio(batched["images_per_s"], baseline["images_per_s"]),
        }
        for protocol, concurrency, batched, baseline in _paired(summary, BATCHED, BASELINE)
    ]
