"""The inference engine: a batch of jobs in, top-k predictions out, on the GPU when there is one.

Two stages, each on its own executor, so that while batch N runs on the device
(one thread, its own CUDA stream) batch N+1 is decoded, preprocessed and copied
host-to-device from pinned memory on a second stream:

    prepare (decode -> resize/crop/normalise -> stack -> H2D)  |  infer (model -> softmax -> top-k -> D2H)

A job whose image fails to decode gets its own exception back; its batch-mates are unaffected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from . import metrics
from .flags import FlagConfig, flag, int_tuple
from .imaging import decode_cpu, decode_jpegs_gpu, sniff_format
from .jobs import EncodedImage, Job, PixelImage, Prediction, PreprocessedImage
from .preprocess import EvalTransform

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class EngineConfig(FlagConfig):
    device: str = flag("auto", "auto: cuda when available", choices=DEVICES)
    precision: str | None = flag(None, "default: bf16 on GPU, fp32 on CPU", parse=str, choices=PRECISIONS)
    channels_last: bool = flag(True, "Keep images and weights in NCHW memory order, not channels-last")
    compile: bool = flag(False, "torch.compile + CUDA graphs per batch bucket")
    # No flag of its own: the batcher's --max_batch_size, so the two always agree.
    max_batch_size: int = 32
    decode_threads: int = flag(4, "CPU image-decoding threads")
    # The batch shapes --compile captures; None: powers of two up to max_batch_size. Fewer
    # buckets start faster (each is a compile and a CUDA graph) and pad more.
    batch_buckets: tuple[int, ...] | None = flag(
        None,
        "With --compile: the batch sizes captured, e.g. 1,8,64,256 (default: powers of two up to --max_batch_size)",
        parse=int_tuple,
    )

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device=cuda was asked for but no CUDA device is available")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {self.max_batch_size}")
        if self.decode_threads < 1:
            raise ValueError(f"decode_threads must be an integer >= 1, got {self.decode_threads}")
        if self.batch_buckets is not None:
            buckets = list(self.batch_buckets)
            if not self.compile:
                raise ValueError("batch_buckets only applies with compile (they are the shapes it captures)")
            if not buckets or buckets != sorted(set(buckets)) or buckets[0] < 1:
                raise ValueError(f"batch_buckets must be increasing integers >= 1, got {buckets}")
            if buckets[-1] != self.max_batch_size:
                raise ValueError(
                    f"the largest of batch_buckets must equal max_batch_size ({self.max_batch_size}), "
                    f"so that every batch fits one; got {buckets[-1]}"
                )

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_precision(self) -> str:
        if self.precision is not None:
            return self.precision
        return "bf16" if self.resolved_device().type == "cuda" else "fp32"


def batch_buckets(max_batch_size: int) -> list[int]:
    """Powers of two up to max_batch_size, and max_batch_size itself: the shapes compiled code sees."""
    sizes, b = [], 1
    while b < max_batch_size:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch_size]


@dataclass
class _Prepared:
    batch: torch.Tensor | None  # [n, 3, S, S] on the device, in the model's dtype
    positions: list[int]  # job index of each batch row
    errors: dict[int, Exception]
    ready: torch.cuda.Event | None
    top_k: int
    size: int  # number of jobs


class Engine:
    def __init__(self, module: torch.nn.Module, transform: EvalTransform, config: EngineConfig) -> None:
        self.config = config
        self.device = config.resolved_device()
        self.precision = config.resolved_precision()
        self.dtype = _DTYPES[self.precision]
        self.transform = transform
        self.crop_size = transform.crop_size
        self.buckets = list(config.batch_buckets or batch_buckets(config.max_batch_size)) if config.compile else []
        self._cuda = self.device.type == "cuda"
        self._memory_format = torch.channels_last if config.channels_last else torch.contiguous_format

        # Already in eval mode: the artifact loader's job.
        module = module.to(self.device, dtype=self.dtype)
        if config.channels_last and not isinstance(module, torch.jit.ScriptModule):
            module = module.to(memory_format=torch.channels_last)
        self.model = self._maybe_compile(module)

        self._decode_pool = ThreadPoolExecutor(config.decode_threads, thread_name_prefix="decode")
        # Two prepare threads: with two batches in flight, both can be in preparation.
        self._prepare_pool = ThreadPoolExecutor(2, thread_name_prefix="prepare")
        # One device thread: batches run on the device strictly one after another.
        self._device_pool = ThreadPoolExecutor(1, thread_name_prefix="device")
        self._copy_stream = torch.cuda.Stream(self.device) if self._cuda else None
        self._compute_stream = torch.cuda.Stream(self.device) if self._cuda else None
        self._oom_logged = False

    def _maybe_compile(self, module: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        if not self.config.compile:
            return module
        if isinstance(module, torch.jit.ScriptModule):
            logger.warning("--compile ignored: torch.compile cannot compile a TorchScript module")
            self.buckets = []
            return module
        # reduce-overhead captures a CUDA graph per input shape; buckets keep the shapes few.
        mode = "reduce-overhead" if self._cuda else None
        return torch.compile(module, mode=mode, dynamic=False)

    # ------------------------------------------------------------------ lifecycle

    def warmup(self) -> None:
        """Run every batch shape the server can see, so no real request pays for compilation.

        One log line per shape, with its seconds: with --compile each is a compilation and a
        CUDA graph capture, which is what a Kubernetes startupProbe must wait for."""
        sizes = self.buckets or sorted({1, self.config.max_batch_size})
        start = time.perf_counter()
        for size in sizes:
            # On the device thread and stream: CUDA graphs are bound to the thread that captured them.
            seconds = self._device_pool.submit(self._warm, size).result()
            logger.info("engine warm-up: batch size %d ready in %.2f s", size, seconds)
        logger.info(
            "engine warm in %.2f s: device=%s precision=%s compile=%s shapes=%s",
            time.perf_counter() - start,
            self.device,
            self.precision,
            self.config.compile,
            sizes,
        )

    def _warm(self, size: int) -> float:
        start = time.perf_counter()
        repeats = 3 if self.config.compile else 1  # CUDA graphs are recorded on the 2nd-3rd call
        with _on(self._compute_stream):
            x = torch.zeros(size, 3, self.crop_size, self.crop_size, device=self.device, dtype=self.dtype)
            for _ in range(repeats):
                self._forward_topk(x, 1)
        if self._cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def close(self) -> None:
        for pool in (self._decode_pool, self._prepare_pool, self._device_pool):
            pool.shutdown(wait=True, cancel_futures=False)

    # ------------------------------------------------------------------ batch handler

    async def __call__(self, jobs: list[Job]) -> list[Prediction | Exception]:
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self._prepare_pool, self._prepare, jobs)
        return await loop.run_in_executor(self._device_pool, self._infer, prepared)

    def predict_tensor(self, x: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Engine-only path (benchmarks): a preprocessed batch in, (probabilities, indices) out."""

        def run() -> tuple[torch.Tensor, torch.Tensor]:
            with _on(self._compute_stream):
                batch = x.to(self.device, dtype=self.dtype, non_blocking=True)
                batch = batch.contiguous(memory_format=self._memory_format)
                probs, indices = self._forward_topk(batch, top_k)
                if self._cuda:
                    torch.cuda.current_stream().synchronize()
                return probs, indices

        return self._device_pool.submit(run).result()

    # ------------------------------------------------------------------ stage 1: prepare

    def _prepare(self, jobs: list[Job]) -> _Prepared:
        errors: dict[int, Exception] = {}
        start = time.perf_counter()
        with torch.inference_mode(), _on(self._copy_stream):
            pixels = self._decode(jobs, errors)
            decoded_at = time.perf_counter()
            rows = self._preprocess(jobs, pixels, errors)
            positions = sorted(rows)
            batch = None
            if positions:
                batch = torch.stack([rows[i] for i in positions]).to(dtype=self.dtype)
                batch = batch.contiguous(memory_format=self._memory_format)
            ready = None
            if self._cuda:
                ready = torch.cuda.Event()
                ready.record(self._copy_stream)
        done = time.perf_counter()
        metrics.STAGE_SECONDS.labels("decode").observe(decoded_at - start)
        metrics.STAGE_SECONDS.labels("preprocess").observe(done - decoded_at)
        top_k = max(job.top_k for job in jobs)
        return _Prepared(batch, positions, errors, ready, top_k, len(jobs))

    def _decode(self, jobs: list[Job], errors: dict[int, Exception]) -> dict[int, torch.Tensor]:
        """uint8 [3, H, W] per encoded job, on the device."""
        encoded = {i: job.image.data for i, job in enumerate(jobs) if isinstance(job.image, EncodedImage)}
        out: dict[int, torch.Tensor] = {}
        if self._cuda:
            jpegs = [i for i, data in encoded.items() if sniff_format(data) == "jpeg"]
            if jpegs:
                for i, result in zip(jpegs, decode_jpegs_gpu([encoded[i] for i in jpegs], self.device), strict=False):
                    if isinstance(result, Exception):
                        errors[i] = result
                    else:
                        out[i] = result
            cpu_items = {i: d for i, d in encoded.items() if i not in out and i not in errors}
        else:
            cpu_items = encoded
        futures = {i: self._decode_pool.submit(decode_cpu, data) for i, data in cpu_items.items()}
        for i, future in futures.items():
            try:
                out[i] = self._to_device(future.result())
            except Exception as e:
                errors[i] = e
        return out

    def _preprocess(
        self, jobs: list[Job], pixels: dict[int, torch.Tensor], errors: dict[int, Exception]
    ) -> dict[int, torch.Tensor]:
        """Model input per job. Images of the same size are transformed as one stacked tensor:
        a few kernels per size instead of a few per image (photos from one camera share a size)."""
        rows: dict[int, torch.Tensor] = {}
        # Keyed by (already cropped, shape): a transformer's crops only need normalising.
        by_size: dict[tuple[bool, tuple[int, ...]], list[tuple[int, torch.Tensor]]] = {}
        for i, job in enumerate(jobs):
            if i in errors:
                continue
            image = job.image
            if isinstance(image, PreprocessedImage):
                rows[i] = self._to_device(image.tensor)
                continue
            chw = self._to_device(image.pixels) if isinstance(image, PixelImage) else pixels[i]
            cropped = isinstance(image, PixelImage) and image.cropped
            by_size.setdefault((cropped, tuple(chw.shape)), []).append((i, chw))
        for (cropped, _), members in by_size.items():
            transform = self.transform.normalise if cropped else self.transform
            try:
                out = transform(torch.stack([chw for _, chw in members]))
            except Exception as e:  # one bad group must not fail the rest of the batch
                errors.update((i, e) for i, _ in members)
                continue
            rows.update((i, row) for (i, _), row in zip(members, out, strict=False))
        return rows

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if not self._cuda:
            return t
        # Pinned host memory makes the copy truly asynchronous on the copy stream.
        return t.pin_memory().to(self.device, non_blocking=True)

    # ------------------------------------------------------------------ stage 2: infer

    def _infer(self, prepared: _Prepared) -> list[Prediction | Exception]:
        results: list[Prediction | Exception] = [None] * prepared.size  # type: ignore[list-item]
        for i, e in prepared.errors.items():
            results[i] = e
        if prepared.batch is None:
            return results
        start = time.perf_counter()
        with _on(self._compute_stream):
            if prepared.ready is not None:
                torch.cuda.current_stream().wait_event(prepared.ready)
                prepared.batch.record_stream(torch.cuda.current_stream())
            try:
                probs, indices = self._forward_topk(prepared.batch, prepared.top_k)
            except Exception as e:
                logger.exception("inference failed for a batch of %d", prepared.batch.shape[0])
                for i in prepared.positions:
                    results[i] = e
                return results
            inferred = time.perf_counter()
            probs_list, indices_list = probs.float().cpu().tolist(), indices.cpu().tolist()
        for row, i in enumerate(prepared.positions):
            results[i] = Prediction(indices=indices_list[row], probabilities=probs_list[row])
        metrics.STAGE_SECONDS.labels("inference").observe(inferred - start)
        metrics.STAGE_SECONDS.labels("postprocess").observe(time.perf_counter() - inferred)
        if self._cuda:
            metrics.DEVICE_MEMORY_BYTES.set(torch.cuda.memory_allocated(self.device))
        return results

    def _forward_topk(self, x: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return self._run(x, top_k)
        except torch.OutOfMemoryError:
            if x.shape[0] == 1:
                raise
            if not self._oom_logged:
                logger.warning(
                    "device out of memory on a batch of %d: splitting and retrying (logged once)", x.shape[0]
                )
                self._oom_logged = True
            metrics.OOM_SPLITS.inc()
            if self._cuda:
                torch.cuda.empty_cache()
            half = x.shape[0] // 2
            first, second = self._forward_topk(x[:half], top_k), self._forward_topk(x[half:], top_k)
            return torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]])

    def _run(self, x: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        bucket = next((b for b in self.buckets if b >= n), None)
        if bucket is not None and bucket != n:
            pad = x.new_zeros((bucket - n, *x.shape[1:])).contiguous(memory_format=self._memory_format)
            x = torch.cat([x, pad]).contiguous(memory_format=self._memory_format)
        with torch.inference_mode():
            logits = self.model(x)[:n]
            # Softmax in fp32: bf16 probabilities are too coarse to rank close classes.
            probs = torch.softmax(logits.float(), dim=-1)
            return probs.topk(min(top_k, probs.shape[-1]), dim=-1)


def _on(stream: torch.cuda.Stream | None) -> AbstractContextManager[object]:
    """Run on `stream` when there is one (CUDA), else as usual."""
    return torch.cuda.stream(stream) if stream is not None else nullcontext()
