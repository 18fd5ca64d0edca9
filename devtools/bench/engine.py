"""Engine mode (no network): `Engine.predict_tensor` against plain `model(x)` on the same preprocessed
batch, device, dtype and memory format.

The one module of the benchmark that imports the predictor's internals.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

import torch
from torch.profiler import ProfilerActivity, profile
from torchvision.io import decode_image

from predictor.artifact import load_artifact, read_spec
from predictor.engine import Engine, EngineConfig
from predictor.preprocess import EvalTransform

from .report import engine_line, profile_lines
from .workload import BenchImage, load_image


def model_info(args: argparse.Namespace) -> dict[str, Any]:
    if not args.model_dir:
        return {"name": args.model_name, "dir": None}
    spec = read_spec(args.model_dir)
    return {
        "name": args.model_name,
        "dir": str(args.model_dir),
        "architecture": spec.architecture,
        "format": spec.format,
        "crop_size": spec.crop_size,
    }


def engine_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Engine.predict_tensor against plain model(x): same preprocessed batch, device, dtype, memory format."""
    sizes = args.engine_batch_size or sorted({1, args.max_batch_size})
    artifact = load_artifact(args.model_dir)
    transform = EvalTransform.from_spec(artifact.spec)
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
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        results = []
        for size in sizes:
            x = (
                one.expand(size, -1, -1, -1)
                .to(engine.device, dtype=engine.dtype)
                .contiguous(memory_format=memory_format)
            )
            results.append(_engine_vs_plain(engine, plain, x, args.duration_s, args.repeats, artifact.spec.top_k))
            print(engine_line(results[-1]), flush=True)
            if args.profile:
                results[-1]["profile_top_ops"] = profile_model(plain, x)
                print(profile_lines(results[-1]["profile_top_ops"]), flush=True)
    finally:
        engine.close()
    return {
        "device": str(engine.device),
        "precision": engine.precision,
        "compile": args.compile,
        "torch_threads": torch.get_num_threads(),
        "results": results,
    }


def profile_model(plain: Any, x: torch.Tensor, iterations: int = 5, top: int = 10) -> list[dict[str, Any]]:
    """The operators plain model(x) spends its time in, by self time (device time on a GPU).

    Plain, not the engine: torch.profiler records only the calling thread's CPU ops, and the engine
    runs the model on its own device thread; the engine's extra cost is the engine/plain ratio."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    with torch.inference_mode(), profile(activities=activities) as prof:
        for _ in range(iterations):
            plain(x)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)

    def self_us(e: Any) -> float:
        return cast(float, e.self_device_time_total if x.is_cuda else e.self_cpu_time_total)

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


def _plain_model(module: Any, engine: Engine, compile_: bool) -> Any:
    module = module.eval().to(engine.device, dtype=engine.dtype)
    if engine.config.channels_last and not isinstance(module, torch.jit.ScriptModule):
        module = module.to(memory_format=torch.channels_last)
    return torch.compile(module) if compile_ and not isinstance(module, torch.jit.ScriptModule) else module


def _preprocessed(image: BenchImage, transform: Any) -> torch.Tensor:
    pixels = decode_image(torch.frombuffer(bytearray(image.data), dtype=torch.uint8))
    return cast(torch.Tensor, transform(pixels[:3])).unsqueeze(0)


def _engine_vs_plain(
    engine: Engine, plain: Any, x: torch.Tensor, duration_s: float, repeats: int, top_k: int
) -> dict[str, Any]:
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
