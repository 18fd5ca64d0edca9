"""The transformer's `Model`: decode and crop on the CPU, coalesce, call the predictor, answer.

    request ─▶ codec (same checks as the predictor) ─▶ decode + resize + crop (threads) ─▶ batcher
        ─▶ one gRPC call per batch: UINT8 [N, S, S, 3] ─▶ predictor ─▶ top-k ─▶ codec ─▶ response

The request path (codec, outcome metrics, answer) is `ImageModel`'s, as for every role; only where
the images go differs (`infer`). The batcher is the predictor's: concurrent client requests become
one multi-image predictor call, so the predictor pays its per-request cost once per batch. Every
image carries its request's deadline, and a call's gRPC timeout is what is left of the latest one
among its images.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Unpack

import numpy as np
import torch
from kserve.errors import InvalidInput

from .. import codec
from ..artifact import fetch, read_labels, read_spec
from ..batching import DynamicBatcher
from ..imaging import decode_cpu
from ..jobs import EncodedImage, Image, Job, PixelImage, Prediction, PreprocessedImage
from ..model import BatchedImageModel, ModelArgs, ModelInfo
from ..preprocess import EvalTransform
from . import metrics
from .config import TransformerConfig
from .hop import Batch, ChannelPool, PredictorClient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HopJob:
    """One image on its way to the predictor: a uint8 [S, S, 3] crop or a float32 [3, S, S] tensor."""

    array: np.ndarray
    top_k: int
    deadline: float  # time.monotonic() by which its request must be answered


class ImageTransformer(BatchedImageModel[HopJob]):
    """Runs no engine: what it hands on is the crop as uint8, which a quarter of float32's bytes
    carries over the hop, and the predictor scales and normalises it as it does its own crops."""

    request_metrics = metrics.REQUESTS
    statistics_series = metrics.STATISTICS

    def __init__(self, name: str, *, config: TransformerConfig, **args: Unpack[ModelArgs]) -> None:
        super().__init__(name, **args)
        self.config = config
        self.client: PredictorClient | None = None
        self._transform: EvalTransform | None = None
        self._pool: ThreadPoolExecutor | None = None

    def load(self) -> bool:
        """Read model.json and the labels (not the weights): the same preprocessing as the predictor's."""
        directory = fetch(self.storage_uri, self.model_dir)
        spec = read_spec(directory)
        labels = read_labels(directory / spec.labels, spec.num_classes)
        self._transform = EvalTransform.from_spec(spec)
        self._pool = ThreadPoolExecutor(self.config.decode_threads, thread_name_prefix="transformer-decode")
        timeout_s = self.config.predictor_request_timeout_seconds
        pool = ChannelPool(
            self.config.target,
            size=self.config.predictor_channels,
            max_age_s=self.config.predictor_channel_max_age_s,
            max_message_bytes=self.limits.max_body_bytes,
            use_ssl=self.config.predictor_use_ssl,
            retries=self.config.predictor_request_retries,
            close_grace_s=min(timeout_s, (self.batching.request_timeout_ms or timeout_s * 1000) / 1000),
        )
        self.client = PredictorClient(
            pool, self.config.predictor_model_name or self.name, max_timeout_s=timeout_s, labels=labels
        )
        self.batcher = DynamicBatcher(self._call_predictor, self.batching, metrics.QUEUE)
        self.info = ModelInfo(codec.ModelShape(spec.crop_size, spec.num_classes, spec.top_k), labels)
        logger.info(
            "transformer %s ready: %s px crops of %s for %s at %s (%d channels, round_robin)",
            self.name,
            spec.crop_size,
            directory,
            self.client.model_name,
            pool.target,
            self.config.predictor_channels,
        )
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        if not self.ready:
            return False
        if self.config.enable_predictor_health_check:
            assert self.client is not None
            return await self.client.model_ready()
        return True

    async def stop_serving(self) -> None:
        """Graceful shutdown: refuse new work, send and answer everything accepted, close the channels."""
        await super().stop_serving()
        if self.client is not None:
            await self.client.close()

    def stop(self) -> None:
        self.ready = False
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------ where the images go

    async def infer(self, jobs: list[Job], timeout_ms: float | None) -> list[Prediction]:
        """Crop on the CPU threads, then queue the crops for a coalesced predictor call."""
        assert self.batcher is not None
        deadline = time.monotonic() + (timeout_ms / 1000 if timeout_ms is not None else float("inf"))
        started = time.perf_counter()
        images = [job.image for job in jobs]
        arrays = await asyncio.get_running_loop().run_in_executor(self._pool, self._prepare, images)
        metrics.PREPARE_SECONDS.observe(time.perf_counter() - started)
        hop_jobs = [HopJob(array, job.top_k, deadline) for array, job in zip(arrays, jobs, strict=True)]
        remaining_ms = None if timeout_ms is None else (deadline - time.monotonic()) * 1000
        return await self.batcher.submit(hop_jobs, remaining_ms)

    def _prepare(self, images: list[Image]) -> list[np.ndarray]:
        """What travels: the crop of every image as uint8 HWC, or a preprocessed tensor as it is."""
        assert self._transform is not None
        out = []
        with torch.inference_mode():
            for image in images:
                if isinstance(image, PreprocessedImage):
                    out.append(image.tensor.numpy())
                    continue
                if isinstance(image, EncodedImage):
                    chw = decode_cpu(image.data)
                elif isinstance(image, PixelImage):
                    chw = image.pixels
                if not (isinstance(image, PixelImage) and image.cropped):
                    chw = self._transform.resize_crop(chw)
                out.append(chw.permute(1, 2, 0).contiguous().numpy())
        return out

    async def _call_predictor(self, jobs: list[HopJob]) -> list[Prediction | BaseException]:
        """The batch handler: one call per kind of image (crops, tensors), concurrently."""
        assert self.client is not None
        results: list[Prediction | BaseException | None] = [None] * len(jobs)
        groups: dict[bool, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(job.array.dtype == np.uint8, []).append(i)
        outcomes = await asyncio.gather(
            *(self._call_group([jobs[i] for i in members]) for members in groups.values()), return_exceptions=True
        )
        for members, outcome in zip(groups.values(), outcomes, strict=True):
            for position, i in enumerate(members):
                results[i] = outcome if isinstance(outcome, BaseException) else outcome[position]
        return results  # type: ignore[return-value]

    async def _call_group(self, jobs: list[HopJob]) -> list[Prediction | BaseException]:
        assert self.client is not None
        batch = Batch(np.stack([job.array for job in jobs]), max(job.top_k for job in jobs))
        try:
            return list(await self.client.infer(batch, max(job.deadline for job in jobs)))
        except InvalidInput:
            if len(jobs) == 1:
                raise
            # The predictor refused the batch: call once per image so only the image it refuses
            # fails (and only that image's request), the way the predictor treats its own batches.
            singles = await asyncio.gather(*(self._call_group([job]) for job in jobs), return_exceptions=True)
            return [s if isinstance(s, BaseException) else s[0] for s in singles]

    # ------------------------------------------------------------------ metadata

    def triton_parameters(self) -> dict[str, str]:
        # The coalescing queue is this process's; the model runs behind it.
        parameters = {"role": "transformer", **super().triton_parameters()}
        if self.info is not None:
            parameters["num_classes"] = str(self.info.shape.num_classes)
        if self.client is not None:
            parameters |= {"predictor": self.client.pool.target, "predictor_model_name": self.client.model_name}
        return parameters
