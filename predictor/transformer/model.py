"""The transformer's `Model`: decode and crop on the CPU, coalesce, call the predictor, answer.

    request ─▶ codec (same checks as the predictor) ─▶ decode + resize + crop (threads) ─▶ batcher
        ─▶ one gRPC call per batch: UINT8 [N, S, S, 3] ─▶ predictor ─▶ top-k ─▶ codec ─▶ response

The batcher is the predictor's: concurrent client requests become one multi-image predictor call,
so the predictor pays its per-request cost once per batch. Every image carries its request's
deadline, and a call's gRPC timeout is what is left of the latest one among its images.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import kserve
import numpy as np
import torch
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, InferResponse

from .. import codec, errors
from ..artifact import fetch, read_labels, read_spec
from ..batching import BatchingConfig, DynamicBatcher
from ..imaging import decode_cpu
from ..jobs import EncodedImage, Image, PixelImage, Prediction, PreprocessedImage
from ..limits import RequestLimits
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


class ImageTransformer(kserve.Model):
    def __init__(
        self,
        name: str,
        *,
        model_dir: str,
        storage_uri: str | None = None,
        config: TransformerConfig,
        batching: BatchingConfig = BatchingConfig(),
        limits: RequestLimits = RequestLimits(),
    ) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.storage_uri = storage_uri
        self.config = config
        self.batching = batching
        self.limits = limits
        self.labels: tuple[str, ...] = ()
        self.batcher: DynamicBatcher[HopJob, Prediction] | None = None
        self.client: PredictorClient | None = None
        self._transform: EvalTransform | None = None
        self._shape: codec.ModelShape | None = None
        self._pool: ThreadPoolExecutor | None = None

    def load(self) -> bool:
        """Read model.json and the labels (not the weights): the same preprocessing as the predictor's."""
        directory = fetch(self.storage_uri, self.model_dir)
        spec = read_spec(directory)
        self.labels = read_labels(directory / spec.labels, spec.num_classes)
        self._transform = EvalTransform.from_spec(spec)
        self._shape = codec.ModelShape(spec.crop_size, spec.num_classes, spec.top_k)
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
            pool, self.config.predictor_model_name or self.name, max_timeout_s=timeout_s, labels=self.labels
        )
        self.batcher = DynamicBatcher(self._call_predictor, self.batching, metrics.QUEUE)
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
        self.ready = False
        if self.batcher is not None:
            await self.batcher.close()
        if self.client is not None:
            await self.client.close()

    def stop(self) -> None:
        self.ready = False
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------ request path

    async def __call__(self, body: Any, headers: dict[str, str] | None = None, verb: Any = None, **kwargs: Any) -> Any:
        start = time.perf_counter()
        metrics.INFLIGHT_REQUESTS.inc()
        status = errors.OUTCOME_ERROR
        try:
            call = super().__call__(body, headers=headers) if verb is None else super().__call__(body, headers, verb)
            result = await call
            status = errors.OUTCOME_OK
            return result
        except Exception as e:
            status = errors.metric_label(e)
            raise
        finally:
            metrics.INFLIGHT_REQUESTS.dec()
            metrics.REQUESTS.labels(status).inc()
            metrics.REQUEST_SECONDS.observe(time.perf_counter() - start)

    def validate(self, payload: Any) -> Any:
        return payload

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> codec.DecodedRequest:
        assert self._shape is not None and self.batcher is not None
        received_at = time.monotonic()
        self.batcher.reject_if_full()
        if isinstance(payload, InferRequest):
            decoded = codec.decode_v2(payload, self._shape, self.limits)
        else:
            decoded = codec.decode_v1(payload, self._shape, self.limits)
        decoded.received_at = received_at
        return decoded

    async def predict(
        self, decoded: codec.DecodedRequest, headers: dict[str, str] | None = None
    ) -> tuple[codec.DecodedRequest, list[Prediction]]:
        assert self.batcher is not None
        timeout_ms = self.batching.request_timeout_ms
        deadline = decoded.received_at + (timeout_ms / 1000 if timeout_ms is not None else float("inf"))
        started = time.perf_counter()
        arrays = await asyncio.get_running_loop().run_in_executor(self._pool, self._prepare, decoded.images)
        metrics.PREPARE_SECONDS.observe(time.perf_counter() - started)
        k = codec.max_top_k(decoded)
        jobs = [HopJob(array, k, deadline) for array in arrays]
        remaining_ms = None if timeout_ms is None else (deadline - time.monotonic()) * 1000
        predictions = await self.batcher.submit(jobs, remaining_ms)
        return decoded, predictions

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

    async def postprocess(
        self, result: Any, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        decoded, predictions = result
        if decoded.v2_request is None:
            return codec.encode_v1([p.top(decoded.top_k) for p in predictions], self.labels)
        return codec.encode_v2(decoded, predictions, self.labels, self.name)

    # ------------------------------------------------------------------ metadata

    def get_input_types(self) -> list[dict[str, Any]]:
        return codec.input_types(self._shape.crop_size if self._shape else -1)

    def get_output_types(self) -> list[dict[str, Any]]:
        return codec.output_types()
