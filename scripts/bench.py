#!/usr/bin/env python
"""Benchmark the predictor: dynamic batching against max_batch_size=1, engine against plain model(x).

    python scripts/bench.py --model_dir models/efficientnet-lite0                  # `make bench`
    python scripts/bench.py --model_dir /tmp/lite0 --protocols grpc,rest,v1 --concurrency 1,8,32 --duration_s 10
    python scripts/bench.py --model_dir models/resnet50 --engine_only --engine_batch_size 256 \
        --device cuda --precision bf16 --compile
    python scripts/bench.py --server_url http://host:8080 --grpc_url host:8081 --model_name NAME   # a running server

Network mode starts two servers on loopback (`--max_batch_size N` and `--max_batch_size 1`), then
for every protocol and concurrency runs one closed-loop step against each, interleaved so that
both see the same machine state: N clients send one image per request back to back for
--warmup_s (not measured) and then --duration_s (measured).  The batch-size histogram is read
from each server's /metrics at the start and the end of the measured window.
Engine mode (no network) times `Engine.predict_tensor` against plain `model(x)` on the same
preprocessed batch, device, dtype and memory format.

Load-generator choices, because the load generator shares the CPUs with the server:
every request body is built once and sent as bytes; gRPC goes through grpc.aio with KServe's
own generated messages (tritonclient.grpc cannot share a process with kserve, which engine
mode imports) and no per-call serializer, so a call costs the client almost nothing.
Writes bench.json and bench.png into --output_dir and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import io
import itertools
import json
import multiprocessing
import os
import platform
import resource
import shlex
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
# Runnable from a checkout without `pip install -e .`.
sys.path.insert(0, str(REPO))

PROTOCOLS = ("grpc", "rest", "v1")
GRPC_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
REQUEST_TIMEOUT_S = 30.0  # a request slower than this is an error, and bounds a step's drain
SERVER_READY_TIMEOUT_S = 600.0  # --compile on a GPU compiles and captures every batch bucket first
BATCHED, BASELINE = "batched", "baseline"
BATCH_SIZE_METRIC = "predictor_batch_size"

Sender = Callable[[], Awaitable[str]]  # one request; returns "ok" or an error key


# ----------------------------------------------------------------------------- CLI


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers >= 1, got {text!r}")
    return values


def _protocol_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(values) - set(PROTOCOLS))
    if not values or unknown:
        raise argparse.ArgumentTypeError(
            f"protocols are a comma-separated subset of {','.join(PROTOCOLS)}, got {text!r}"
        )
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--model_dir", help="Model artifact; needed unless --server_url is given (then only for engine mode)"
    )
    p.add_argument("--model_name", default="efficientnet-lite0", help="Name the model is served under")
    p.add_argument(
        "--protocols",
        type=_protocol_list,
        default=list(PROTOCOLS),
        help="grpc: v2 gRPC; rest: v2 REST binary; v1: v1 JSON base64",
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
    if args.server_url is not None:
        args.skip_baseline = True  # a remote server's max_batch_size is not ours to change
        args.skip_engine = args.skip_engine or (args.model_dir is None and not args.engine_only)
    if not args.model_dir and (args.server_url is None or args.engine_only):
        parser.error("--model_dir is required (it may be omitted only with --server_url)")
    if (
        min(
            args.duration_s,
            args.repeats,
            args.max_requests,
            args.max_batch_size,
            args.grpc_channels,
            args.client_processes,
        )
        <= 0
        or args.warmup_s < 0
    ):
        parser.error(
            "--duration_s, --repeats, --max_requests, --max_batch_size, --grpc_channels, --client_processes "
            "must be > 0 and --warmup_s >= 0"
        )


# ----------------------------------------------------------------------------- machine and image


def machine_info() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpu": gpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        # Other jobs on the machine skew every figure; the step records say how much CPU they took.
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


@dataclass(frozen=True)
class BenchImage:
    name: str
    data: bytes
    width: int
    height: int


def load_image(spec: str) -> BenchImage:
    from PIL import Image

    if spec in ("chelsea", "chelsea-500x375"):
        import skimage.data

        image = Image.fromarray(skimage.data.chelsea())
        if spec == "chelsea-500x375":
            image = image.resize((500, 375), Image.BILINEAR)  # the GPU target's image size
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=92)
        return BenchImage(spec, buf.getvalue(), *image.size)
    data = Path(spec).read_bytes()
    width, height = Image.open(io.BytesIO(data)).size
    return BenchImage(spec, data, width, height)


# ----------------------------------------------------------------------------- request bodies and senders


def _bytes_element(data: bytes) -> bytes:
    """Triton's BYTES wire format: 4-byte little-endian length, then the bytes."""
    return struct.pack("<I", len(data)) + data


def grpc_request_bytes(model_name: str, image: bytes) -> bytes:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=model_name)
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(_bytes_element(image))
    return request.SerializeToString()


def rest_binary_body(image: bytes) -> tuple[bytes, dict[str, str]]:
    """v2 binary data extension: the JSON header, then the raw input; outputs come back binary too."""
    element = _bytes_element(image)
    header = {
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(element)}}
        ],
        "outputs": [
            {"name": n, "parameters": {"binary_data": True}} for n in ("class_names", "probabilities", "class_indices")
        ],
    }
    head = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
    return head + element, headers


def v1_body(image: bytes) -> bytes:
    return json.dumps({"instances": [{"image": {"b64": base64.b64encode(image).decode()}}]}).encode()


def top_class_grpc(raw: bytes) -> str:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    response = pb.ModelInferResponse.FromString(raw)
    for i, out in enumerate(response.outputs):
        if out.name == "class_names":
            if response.raw_output_contents:
                return _first_bytes_element(response.raw_output_contents[i]).decode()
            return out.contents.bytes_contents[0].decode()
    raise ValueError("gRPC response has no class_names output")


def top_class_rest_binary(body: bytes, header_length: int | None) -> str:
    header = json.loads(body[:header_length] if header_length is not None else body)
    offset = header_length or 0
    for out in header["outputs"]:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if out["name"] == "class_names":
            return _first_bytes_element(body[offset:]).decode() if size is not None else out["data"][0]
        offset += size or 0
    raise ValueError("REST response has no class_names output")


def _first_bytes_element(raw: bytes) -> bytes:
    (length,) = struct.unpack_from("<I", raw, 0)
    return raw[4 : 4 + length]


class GrpcClient:
    """Concurrent clients sharing `channels` HTTP/2 connections, round robin. One channel is how a
    single gRPC caller behaves; several spread over the server's --workers (one connection lands
    on one worker)."""

    def __init__(self, target: str, request: bytes, channels: int = 1) -> None:
        import grpc

        self._grpc = grpc
        self._request = request
        options = [
            ("grpc.max_receive_message_length", 64 << 20),
            # Without it, channels to one target share one connection.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        self._channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
        # No serializers: the request is sent as pre-built bytes and the reply stays bytes.
        self._calls = [channel.unary_unary(GRPC_INFER_METHOD) for channel in self._channels]
        self._next = itertools.cycle(self._calls)

    async def send(self) -> str:
        try:
            await next(self._next)(self._request, timeout=REQUEST_TIMEOUT_S)
        except self._grpc.aio.AioRpcError as e:
            return f"grpc_{e.code().name}"
        return "ok"

    async def top_class(self) -> str:
        return top_class_grpc(await self._calls[0](self._request, timeout=REQUEST_TIMEOUT_S))

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


class HttpClient:
    """v2 REST binary or v1 JSON base64 over a keep-alive connection pool as large as the concurrency."""

    def __init__(self, base_url: str, model_name: str, protocol: str, image: bytes, max_connections: int) -> None:
        if protocol == "rest":
            self._url = f"{base_url}/v2/models/{model_name}/infer"
            self._body, self._headers = rest_binary_body(image)
        else:
            self._url = f"{base_url}/v1/models/{model_name}:predict"
            self._body, self._headers = v1_body(image), {"Content-Type": "application/json"}
        self._protocol = protocol
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_S)

    async def send(self) -> str:
        try:
            r = await self._client.post(self._url, content=self._body, headers=self._headers)
        except httpx.TimeoutException:
            return "http_timeout"
        except httpx.HTTPError as e:
            return f"http_{type(e).__name__}"
        return "ok" if r.status_code == 200 else f"http_{r.status_code}"

    async def top_class(self) -> str:
        r = await self._client.post(self._url, content=self._body, headers=self._headers)
        r.raise_for_status()
        if self._protocol == "v1":
            return r.json()["predictions"][0]["class_names"][0]
        length = r.headers.get("inference-header-content-length")
        return top_class_rest_binary(r.content, int(length) if length is not None else None)

    async def close(self) -> None:
        await self._client.aclose()


# ----------------------------------------------------------------------------- /metrics


Snapshot = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # (sample name, sorted labels) -> value
STAGES = ("decode", "preprocess", "inference", "postprocess")


def parse_metrics(text: str) -> Snapshot:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("predictor_")
        for s in family.samples
    }


def _delta(before: Snapshot, after: Snapshot, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def batch_distribution(before: Snapshot | None, after: Snapshot | None) -> dict[str, Any] | None:
    """Batches dispatched between two scrapes: mean size and how many fell in each bucket (not cumulative)."""
    if before is None or after is None:
        return None
    batches = _delta(before, after, f"{BATCH_SIZE_METRIC}_count")
    images = _delta(before, after, f"{BATCH_SIZE_METRIC}_sum")
    bounds = [dict(labels)["le"] for name, labels in after if name == f"{BATCH_SIZE_METRIC}_bucket"]
    per_bucket, previous = {}, 0.0
    for le in bounds:  # exposition order: ascending upper bounds
        cumulative = _delta(before, after, f"{BATCH_SIZE_METRIC}_bucket", le=le)
        per_bucket[le if le == "+Inf" else f"{float(le):g}"] = int(round(cumulative - previous))
        previous = cumulative
    return {
        "batches": int(round(batches)),
        "images": int(round(images)),
        "mean": round(images / batches, 2) if batches else None,
        "buckets": per_bucket,
    }


def stage_times_ms(before: Snapshot | None, after: Snapshot | None) -> dict[str, Any] | None:
    """Where the server's time went between two scrapes: each pipeline stage per batch and per image."""
    if before is None or after is None:
        return None
    images = _delta(before, after, f"{BATCH_SIZE_METRIC}_sum")
    out: dict[str, Any] = {}
    for stage in STAGES:
        seconds = _delta(before, after, "predictor_stage_seconds_sum", stage=stage)
        batches = _delta(before, after, "predictor_stage_seconds_count", stage=stage)
        out[stage] = {"per_batch": _ms(seconds, batches), "per_image": _ms(seconds, images)}
    waits = _delta(before, after, "predictor_queue_wait_seconds_count")
    out["queue_wait_mean"] = _ms(_delta(before, after, "predictor_queue_wait_seconds_sum"), waits)
    return out


def _ms(seconds: float, count: float) -> float | None:
    return round(seconds * 1000 / count, 2) if count else None


async def scrape_metrics(client: httpx.AsyncClient, base_url: str) -> Snapshot | None:
    # A remote server may not expose /metrics where the benchmark can reach it: report no distribution.
    try:
        r = await client.get(f"{base_url}/metrics")
        r.raise_for_status()
    except httpx.HTTPError:
        return None
    return parse_metrics(r.text)


# ----------------------------------------------------------------------------- one closed-loop step


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


def latency_summary(latencies_ms: list[float]) -> dict[str, float | None]:
    if not latencies_ms:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    p50, p90, p99 = np.percentile(latencies_ms, [50, 90, 99])
    return {
        "p50": round(float(p50), 2),
        "p90": round(float(p90), 2),
        "p99": round(float(p99), 2),
        "mean": round(statistics.fmean(latencies_ms), 2),
    }


def _client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine_busy_cpu_s() -> float:
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


@dataclass
class _StepState:
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (finished_at, latency_s) of oks
    errors: Counter = field(default_factory=Counter)


async def _client_loop(send: Sender, state: _StepState, max_requests: int) -> None:
    while not state.stop.is_set():
        state.sent += 1
        if state.sent >= max_requests:
            state.stop.set()
        started = time.perf_counter()
        status = await send()
        finished = time.perf_counter()
        if status == "ok":
            state.latencies.append((finished, finished - started))
        else:
            state.errors[status] += 1


async def run_step(
    send: Sender,
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    max_requests: int,
    metrics: Callable[[], Awaitable[Snapshot | None]],
    server_cpu_s: Callable[[], float | None],
) -> tuple[float, list[float], Counter, tuple[Snapshot | None, Snapshot | None], dict[str, float | None]]:
    """Closed loop: `concurrency` clients back to back; measured from the end of warm-up until
    duration_s passes or max_requests are sent.
    Returns (window_s, latencies_ms, errors, /metrics at the window's start and end, CPU seconds)."""
    state = _StepState()
    clients = [asyncio.create_task(_client_loop(send, state, max_requests)) for _ in range(concurrency)]
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(state.stop.wait(), warmup_s)
    window_start = time.perf_counter()
    before = await metrics()
    cpu_before = (server_cpu_s(), _client_cpu_s(), _machine_busy_cpu_s())
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(state.stop.wait(), duration_s)
    window_end = time.perf_counter()
    after = await metrics()
    cpu_after = (server_cpu_s(), _client_cpu_s(), _machine_busy_cpu_s())
    state.stop.set()
    await asyncio.gather(*clients)  # in-flight requests finish (bounded by REQUEST_TIMEOUT_S), unmeasured
    latencies_ms = [lat * 1000 for finished, lat in state.latencies if window_start <= finished <= window_end]
    return window_end - window_start, latencies_ms, state.errors, (before, after), _cpu_split(cpu_before, cpu_after)


def _client_pool(processes: int) -> ProcessPoolExecutor | None:
    if processes <= 1:
        return None
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
    # Start them all and import the client libraries now (seconds on a busy machine), not
    # inside a step's start-up margin.
    for f in [pool.submit(_import_client_libraries) for _ in range(processes)]:
        f.result()
    return pool


def _import_client_libraries() -> None:
    import grpc  # noqa: F401

    time.sleep(0.2)  # hold this process so the next task goes to another one


async def run_step_in_processes(
    pool: ProcessPoolExecutor,
    spec: ClientSpec,
    processes: int,
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    max_requests: int,
    metrics: Callable[[], Awaitable[Snapshot | None]],
    server_cpu_s: Callable[[], float | None],
) -> tuple[float, list[float], Counter, tuple[Snapshot | None, Snapshot | None], dict[str, float | None]]:
    """run_step with the clients spread over `processes` processes, for rates one Python client
    process cannot generate. All share one wall-clock window; the window is fixed at duration_s
    (a process that reaches its share of max_requests stops sending early)."""
    loop = asyncio.get_running_loop()
    start_at = time.time() + 1.0  # every process has its clients built before any load
    window_start, window_end = start_at + warmup_s, start_at + warmup_s + duration_s
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    futures = [
        loop.run_in_executor(
            pool,
            _client_process,
            spec.share(processes),
            share,
            start_at,
            window_start,
            window_end,
            max(1, max_requests // processes),
        )
        for share in shares
    ]
    await asyncio.sleep(max(0.0, window_start - time.time()))
    before = await metrics()
    server_before, machine_before = server_cpu_s(), _machine_busy_cpu_s()
    await asyncio.sleep(max(0.0, window_end - time.time()))
    after = await metrics()
    server_after, machine_after = server_cpu_s(), _machine_busy_cpu_s()
    results = await asyncio.gather(*futures)
    late_s = max(r["late_s"] for r in results)
    if late_s > 0:
        raise RuntimeError(
            f"a client process started {late_s:.2f} s after the measured window opened; raise --warmup_s"
        )
    latencies_ms = [lat for r in results for lat in r["latencies_ms"]]
    errors: Counter = sum((Counter(r["errors"]) for r in results), Counter())
    client_cpu_s = sum(r["cpu_s"] for r in results)
    cpu = _cpu_split((server_before, 0.0, machine_before), (server_after, client_cpu_s, machine_after))
    return duration_s, latencies_ms, errors, (before, after), cpu


def _client_process(
    spec: ClientSpec, concurrency: int, start_at: float, window_start: float, window_end: float, max_requests: int
) -> dict[str, Any]:
    """One client process's share of a step (runs in a pool process)."""
    return asyncio.run(_client_process_step(spec, concurrency, start_at, window_start, window_end, max_requests))


async def _client_process_step(
    spec: ClientSpec, concurrency: int, start_at: float, window_start: float, window_end: float, max_requests: int
) -> dict[str, Any]:
    client = build_client(spec)
    state = _StepState()
    late_s = max(0.0, time.time() - window_start)
    try:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        loops = [asyncio.create_task(_client_loop(client.send, state, max_requests)) for _ in range(concurrency)]
        await asyncio.sleep(max(0.0, window_start - time.time()))
        measured_from, cpu_before = time.perf_counter(), _client_cpu_s()
        await asyncio.sleep(max(0.0, window_end - time.time()))
        measured_to, cpu_after = time.perf_counter(), _client_cpu_s()
        state.stop.set()
        await asyncio.gather(*loops)
    finally:
        await client.close()
    latencies_ms = [lat * 1000 for finished, lat in state.latencies if measured_from <= finished <= measured_to]
    return {
        "latencies_ms": latencies_ms,
        "errors": dict(state.errors),
        "cpu_s": cpu_after - cpu_before,
        "late_s": late_s,
    }


def _cpu_split(
    before: tuple[float | None, float, float], after: tuple[float | None, float, float]
) -> dict[str, float | None]:
    server = after[0] - before[0] if after[0] is not None and before[0] is not None else None
    client, machine = after[1] - before[1], after[2] - before[2]
    other = machine - client - server if server is not None else None
    return {"server": _round(server), "client": _round(client), "other": _round(other)}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


# ----------------------------------------------------------------------------- servers


@dataclass
class Server:
    config: str
    base_url: str
    grpc_target: str
    process: subprocess.Popen | None = None  # None: a server this script did not start
    log_path: Path | None = None

    def cpu_s(self) -> float | None:
        if self.process is None:
            return None
        import psutil

        with contextlib.suppress(psutil.Error):
            # Under --workers the parent only supervises; the serving is in its children.
            root = psutil.Process(self.process.pid)
            total = 0.0
            for process in (root, *root.children(recursive=True)):
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system
            return total
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_server(config: str, args: argparse.Namespace, max_batch_size: int, output_dir: Path) -> Server:
    http_port, grpc_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "predictor",
        "--model_name",
        args.model_name,
        "--model_dir",
        str(args.model_dir),
        "--http_port",
        str(http_port),
        "--grpc_port",
        str(grpc_port),
        "--bind_address",
        "127.0.0.1",
        "--max_batch_size",
        str(max_batch_size),
        "--max_latency_ms",
        str(args.max_latency_ms),
        "--device",
        args.device,
        # A log line per request is CPU the server would spend on logging, not serving.
        "--enable_latency_logging",
        "false",
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
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    return Server(config, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", process, log_path)


def wait_ready(server: Server, model_name: str, timeout_s: float = SERVER_READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    url = f"{server.base_url}/v2/models/{model_name}/ready"
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"{server.config} server exited with {server.process.returncode}:\n{_log_tail(server)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{server.config} server not ready after {timeout_s:.0f} s:\n{_log_tail(server)}")


def _log_tail(server: Server) -> str:
    return server.log_path.read_text(errors="replace")[-4000:] if server.log_path else ""


def stop_server(server: Server, timeout_s: float = 30) -> None:
    if server.process is None or server.process.poll() is not None:
        return
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@contextlib.contextmanager
def servers(args: argparse.Namespace, output_dir: Path) -> Iterator[list[Server]]:
    if args.server_url is not None:
        yield [Server(BATCHED, args.server_url.rstrip("/"), args.grpc_url or _default_grpc_target(args.server_url))]
        return
    configs = [(BATCHED, args.max_batch_size)] + ([] if args.skip_baseline else [(BASELINE, 1)])
    started: list[Server] = []
    try:
        # Both start (load + warm-up) in parallel, then both stay up so every step pair is side by side.
        for config, size in configs:
            started.append(launch_server(config, args, size, output_dir))
        for server in started:
            wait_ready(server, args.model_name)
        yield started
    finally:
        for server in started:
            stop_server(server)


def _default_grpc_target(server_url: str) -> str:
    host = httpx.URL(server_url).host
    return f"{host}:8081"


# ----------------------------------------------------------------------------- network sweep


@dataclass(frozen=True)
class ClientSpec:
    """What a client needs, as plain data: client processes rebuild their clients from it."""

    protocol: str
    base_url: str
    grpc_target: str
    model_name: str
    image: bytes
    grpc_request: bytes  # built here: a client process need not import kserve
    grpc_channels: int
    max_connections: int

    def share(self, processes: int) -> ClientSpec:
        """One client process's part of the connections."""
        return dataclasses.replace(
            self,
            grpc_channels=max(1, self.grpc_channels // processes),
            max_connections=max(1, -(-self.max_connections // processes)),
        )


def build_client(spec: ClientSpec) -> GrpcClient | HttpClient:
    if spec.protocol == "grpc":
        return GrpcClient(spec.grpc_target, spec.grpc_request, spec.grpc_channels)
    return HttpClient(spec.base_url, spec.model_name, spec.protocol, spec.image, spec.max_connections)


def _client_spec(server: Server, protocol: str, args: argparse.Namespace, image: BenchImage) -> ClientSpec:
    return ClientSpec(
        protocol=protocol,
        base_url=server.base_url,
        grpc_target=server.grpc_target,
        model_name=args.model_name,
        image=image.data,
        grpc_request=grpc_request_bytes(args.model_name, image.data) if protocol == "grpc" else b"",
        grpc_channels=args.grpc_channels,
        max_connections=max(args.concurrency),
    )


async def network_sweep(
    srvs: list[Server], args: argparse.Namespace, image: BenchImage
) -> tuple[list[StepResult], dict[str, str]]:
    specs = {(s.config, p): _client_spec(s, p, args, image) for s in srvs for p in args.protocols}
    clients = {key: build_client(spec) for key, spec in specs.items()}
    metrics_client = httpx.AsyncClient(timeout=10)
    pool = _client_pool(args.client_processes)
    try:
        # One request per path first: a broken protocol fails here, loudly, not as a sweep of errors.
        top_classes = {f"{config}/{p}": await c.top_class() for (config, p), c in clients.items()}
        steps = []
        for repeat in range(args.repeats):
            for protocol in args.protocols:
                for concurrency in args.concurrency:
                    for server in srvs:
                        key = (server.config, protocol)
                        step = await _one_step(
                            server, protocol, concurrency, repeat, clients[key], specs[key], pool, metrics_client, args
                        )
                        print(_step_line(step), flush=True)
                        steps.append(step)
        return steps, top_classes
    finally:
        for c in clients.values():
            await c.close()
        await metrics_client.aclose()
        if pool is not None:
            pool.shutdown()


async def _one_step(
    server: Server,
    protocol: str,
    concurrency: int,
    repeat: int,
    client: GrpcClient | HttpClient,
    spec: ClientSpec,
    pool: ProcessPoolExecutor | None,
    metrics_client: httpx.AsyncClient,
    args: argparse.Namespace,
) -> StepResult:
    common = dict(
        concurrency=concurrency,
        warmup_s=args.warmup_s,
        duration_s=args.duration_s,
        max_requests=args.max_requests,
        metrics=lambda: scrape_metrics(metrics_client, server.base_url),
        server_cpu_s=server.cpu_s,
    )
    if pool is None or concurrency < args.client_processes:
        window_s, latencies_ms, errors, (before, after), cpu_s = await run_step(client.send, **common)
    else:
        window_s, latencies_ms, errors, (before, after), cpu_s = await run_step_in_processes(
            pool, spec, args.client_processes, **common
        )
    return StepResult(
        config=server.config,
        protocol=protocol,
        concurrency=concurrency,
        repeat=repeat,
        window_s=round(window_s, 3),
        requests_ok=len(latencies_ms),
        images_per_s=round(len(latencies_ms) / window_s, 2) if window_s > 0 else 0.0,
        latency_ms=latency_summary(latencies_ms),
        errors=dict(errors),
        errors_total=sum(errors.values()),
        batch_size=batch_distribution(before, after),
        stage_ms=stage_times_ms(before, after),
        server_cpu_s=cpu_s["server"],
        client_cpu_s=cpu_s["client"],
        other_cpu_s=cpu_s["other"],
    )


def _step_line(s: StepResult) -> str:
    mean_batch = (s.batch_size or {}).get("mean")
    return (
        f"  {s.config:<8} {s.protocol:<4} c={s.concurrency:<4} #{s.repeat}: {s.images_per_s:8.1f} img/s  "
        f"p50 {s.latency_ms['p50']} ms  p99 {s.latency_ms['p99']} ms  batch {mean_batch}  errors {s.errors_total}  "
        f"cpu s: server {s.server_cpu_s} client {s.client_cpu_s} other {s.other_cpu_s}"
    )


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


def batching_gain(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_key = {(r["config"], r["protocol"], r["concurrency"]): r for r in summary}
    gains = []
    for (config, protocol, concurrency), batched in by_key.items():
        baseline = by_key.get((BASELINE, protocol, concurrency))
        if config != BATCHED or baseline is None:
            continue
        ratio = batched["images_per_s"] / baseline["images_per_s"] if baseline["images_per_s"] else None
        gains.append(
            {
                "protocol": protocol,
                "concurrency": concurrency,
                "batched_images_per_s": batched["images_per_s"],
                "baseline_images_per_s": baseline["images_per_s"],
                "ratio": round(ratio, 3) if ratio is not None else None,
            }
        )
    return gains


# ----------------------------------------------------------------------------- engine only


def engine_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Engine.predict_tensor against plain model(x): same preprocessed batch, device, dtype, memory format."""
    import torch

    from predictor.artifact import load_artifact
    from predictor.engine import Engine, EngineConfig
    from predictor.preprocess import EvalTransform

    sizes = args.engine_batch_size or sorted({1, args.max_batch_size})
    artifact = load_artifact(args.model_dir)
    spec = artifact.spec
    transform = EvalTransform(
        resize_size=spec.resize_size,
        crop_size=spec.crop_size,
        mean=spec.mean,
        std=spec.std,
        interpolation=spec.interpolation,
    )
    # Compiled: capture exactly the measured sizes, not every power of two below them.
    config = EngineConfig(
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        max_batch_size=max(sizes),
        batch_buckets=tuple(sorted(set(sizes))) if args.compile else None,
    )
    engine = Engine(artifact.module, transform, config)
    engine.warmup()
    try:
        plain = _plain_model(load_artifact(args.model_dir).module, engine, args.compile)
        one = _preprocessed(load_image(args.image), transform)
        results = []
        for size in sizes:
            memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
            x = (
                one.expand(size, -1, -1, -1)
                .to(engine.device, dtype=engine.dtype)
                .contiguous(memory_format=memory_format)
            )
            results.append(_engine_vs_plain(engine, plain, x, args.duration_s, args.repeats, spec.top_k))
            print(_engine_line(results[-1]), flush=True)
            if args.profile:
                results[-1]["profile_top_ops"] = profile_model(plain, x)
                print(_profile_lines(results[-1]["profile_top_ops"]), flush=True)
    finally:
        engine.close()
    return {
        "device": str(engine.device),
        "precision": engine.precision,
        "compile": args.compile,
        "torch_threads": torch.get_num_threads(),
        "results": results,
    }


def profile_model(plain: Any, x: Any, iterations: int = 5, top: int = 10) -> list[dict[str, Any]]:
    """The operators plain model(x) spends its time in, by self time (device time on a GPU).

    Plain, not the engine: torch.profiler records only the calling thread's CPU ops, and the engine
    runs the model on its own device thread; the engine's extra cost is the engine/plain ratio."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    with torch.inference_mode(), profile(activities=activities) as prof:
        for _ in range(iterations):
            plain(x)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)

    def self_us(e: Any) -> float:
        return e.self_device_time_total if x.is_cuda else e.self_cpu_time_total

    events = sorted(prof.key_averages(), key=self_us, reverse=True)
    total_us = sum(self_us(e) for e in events) or 1.0
    images = iterations * x.shape[0]
    return [
        {
            "op": e.key,
            "share": round(self_us(e) / total_us, 3),
            "ms_per_image": round(self_us(e) / 1000 / images, 3),
            "calls_per_batch": round(e.count / iterations, 1),
        }
        for e in events[:top]
    ]


def _profile_lines(ops: list[dict[str, Any]]) -> str:
    return "\n".join(f"      {o['share']:6.1%} {o['ms_per_image']:8.3f} ms/img  {o['op']}" for o in ops)


def _plain_model(module: Any, engine: Any, compile_: bool) -> Any:
    import torch

    module = module.eval().to(engine.device, dtype=engine.dtype)
    if engine.config.channels_last and not isinstance(module, torch.jit.ScriptModule):
        module = module.to(memory_format=torch.channels_last)
    return torch.compile(module) if compile_ and not isinstance(module, torch.jit.ScriptModule) else module


def _preprocessed(image: BenchImage, transform: Any) -> Any:
    import torch
    from torchvision.io import decode_image

    pixels = decode_image(torch.frombuffer(bytearray(image.data), dtype=torch.uint8))
    return transform(pixels[:3]).unsqueeze(0)


def _engine_vs_plain(engine: Any, plain: Any, x: Any, duration_s: float, repeats: int, top_k: int) -> dict[str, Any]:
    import torch

    def plain_call() -> None:
        with torch.inference_mode():
            plain(x)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)

    def engine_call() -> None:
        engine.predict_tensor(x, top_k)  # synchronises its stream itself

    runs: dict[str, list[tuple[float, float]]] = {"engine": [], "plain": []}
    for _ in range(repeats):  # alternated, so drift hits both alike
        runs["plain"].append(_timed(plain_call, duration_s))
        runs["engine"].append(_timed(engine_call, duration_s))
    size = x.shape[0]
    row: dict[str, Any] = {"batch_size": size}
    for name, timings in runs.items():
        row[f"{name}_images_per_s"] = round(statistics.median(size / t for t, _ in timings), 2)
        row[f"{name}_batch_ms_p50"] = round(statistics.median(p50 for _, p50 in timings), 3)
    row["engine_over_plain"] = round(row["engine_images_per_s"] / row["plain_images_per_s"], 3)
    return row


def _timed(call: Callable[[], None], duration_s: float, warmup_calls: int = 3) -> tuple[float, float]:
    """(mean seconds per call, median ms per call) over at least duration_s and 3 calls."""
    for _ in range(warmup_calls):  # compiled variants record CUDA graphs on their first calls
        call()
    times: list[float] = []
    end = time.perf_counter() + duration_s
    while time.perf_counter() < end or len(times) < 3:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.fmean(times), statistics.median(times) * 1000


def _engine_line(r: dict[str, Any]) -> str:
    return (
        f"  engine batch {r['batch_size']:<4}: engine {r['engine_images_per_s']:8.1f} img/s  "
        f"plain {r['plain_images_per_s']:8.1f} img/s  ratio {r['engine_over_plain']}"
    )


# ----------------------------------------------------------------------------- report


def print_tables(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"\nMachine: {m['cpu_model']}, {m['cpu_cores']} cores, GPU: {m['gpu'] or 'none'}, torch {m['torch']}")
    if report.get("summary"):
        print(
            f"\n{'config':<9}{'proto':<6}{'conc':>5}{'img/s':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'batch':>8}"
            f"{'errors':>8}{'infer ms/img':>14}"
        )
        for r in report["summary"]:
            lat = r["latency_ms"]
            print(
                f"{r['config']:<9}{r['protocol']:<6}{r['concurrency']:>5}{_fmt(r['images_per_s']):>10}{_fmt(lat['p50']):>10}"
                f"{_fmt(lat['p90']):>10}{_fmt(lat['p99']):>10}{_fmt(r['mean_batch_size']):>8}{r['errors_total']:>8}"
                f"{_fmt(r['stage_ms_per_image']['inference']):>14}"
            )
    if report.get("batching_gain"):
        print(f"\n{'proto':<6}{'conc':>5}{'batched':>10}{'mbs=1':>10}{'ratio':>8}")
        for g in report["batching_gain"]:
            print(
                f"{g['protocol']:<6}{g['concurrency']:>5}{_fmt(g['batched_images_per_s']):>10}"
                f"{_fmt(g['baseline_images_per_s']):>10}{_fmt(g['ratio']):>8}"
            )
    if report.get("engine"):
        e = report["engine"]
        print(f"\nEngine only ({e['device']}, {e['precision']}, compile={e['compile']}):")
        print(f"{'batch':>6}{'engine img/s':>14}{'plain img/s':>13}{'ratio':>8}{'engine ms':>11}{'plain ms':>10}")
        for r in e["results"]:
            print(
                f"{r['batch_size']:>6}{_fmt(r['engine_images_per_s']):>14}{_fmt(r['plain_images_per_s']):>13}"
                f"{_fmt(r['engine_over_plain']):>8}{_fmt(r['engine_batch_ms_p50']):>11}{_fmt(r['plain_batch_ms_p50']):>10}"
            )


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    summary, engine = report.get("summary") or [], report.get("engine")
    panels = (2 if summary else 0) + (1 if engine else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(6 * max(panels, 1), 4.5), squeeze=False)
    axes = list(axes[0])
    if summary:
        _plot_network(summary, axes.pop(0), axes.pop(0))
    if engine:
        _plot_engine(engine, axes.pop(0))
    m = report["machine"]
    fig.suptitle(f"{report['model']['name']} on {m['gpu'] or m['cpu_model']} ({m['cpu_cores']} CPU cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_network(summary: list[dict[str, Any]], throughput_ax: Any, p99_ax: Any) -> None:
    lines: dict[str, list[dict[str, Any]]] = {}
    for r in summary:
        lines.setdefault(f"{r['protocol']} {r['config']}", []).append(r)
    for label, rows in sorted(lines.items()):
        rows.sort(key=lambda r: r["concurrency"])
        style = "-" if BATCHED in label else "--"
        xs = [r["concurrency"] for r in rows]
        throughput_ax.plot(xs, [r["images_per_s"] for r in rows], style, marker="o", label=label)
        p99_ax.plot(xs, [r["latency_ms"]["p99"] for r in rows], style, marker="o", label=label)
    for ax, ylabel in ((throughput_ax, "images/s"), (p99_ax, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)


def _plot_engine(engine: dict[str, Any], ax: Any) -> None:
    rows = engine["results"]
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r["plain_images_per_s"] for r in rows], 0.4, label="plain model(x)")
    ax.bar(xs + 0.2, [r["engine_images_per_s"] for r in rows], 0.4, label="Engine.predict_tensor")
    ax.set_xticks(xs, [str(r["batch_size"]) for r in rows])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images/s")
    ax.set_title(f"engine only ({engine['device']}, {engine['precision']}, compile={engine['compile']})")
    ax.legend(fontsize=8)


def model_info(args: argparse.Namespace) -> dict[str, Any]:
    if not args.model_dir:
        return {"name": args.model_name, "dir": None}
    from predictor.artifact import read_spec

    spec = read_spec(args.model_dir)
    return {
        "name": args.model_name,
        "dir": str(args.model_dir),
        "architecture": spec.architecture,
        "format": spec.format,
        "crop_size": spec.crop_size,
    }


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
        "args": {k: v for k, v in vars(args).items()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if not args.engine_only:
        with servers(args, output_dir) as srvs:
            print(
                f"network sweep: {', '.join(s.config for s in srvs)} x {args.protocols} x c={args.concurrency}",
                flush=True,
            )
            steps, top_classes = asyncio.run(network_sweep(srvs, args, image))
        summary = summarize(steps)
        report.update(
            top_class=top_classes,
            steps=[asdict(s) for s in steps],
            summary=summary,
            batching_gain=batching_gain(summary),
        )
    if not args.skip_engine:
        print("engine only:", flush=True)
        report["engine"] = engine_bench(args)
    report["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    (output_dir / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, output_dir / "bench.png")
    print_tables(report)
    print(f"\nwrote {output_dir / 'bench.json'} and {output_dir / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
