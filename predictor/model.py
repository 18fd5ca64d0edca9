"""The KServe `Model`: thin glue over artifact (load), codec (protocols), batching and engine."""

from __future__ import annotations

import logging
import time
from typing import Any

import kserve
from kserve.protocol.infer_type import InferRequest, InferResponse

from . import codec, errors, metrics
from .artifact import Artifact, fetch, load_artifact
from .batching import BatchingConfig, DynamicBatcher
from .engine import Engine, EngineConfig
from .jobs import Job, Prediction
from .limits import RequestLimits
from .preprocess import EvalTransform

logger = logging.getLogger(__name__)


class ImageClassifier(kserve.Model):
    def __init__(
        self,
        name: str,
        *,
        model_dir: str,
        storage_uri: str | None = None,
        engine_config: EngineConfig = EngineConfig(),
        batching: BatchingConfig = BatchingConfig(),
        limits: RequestLimits = RequestLimits(),
    ) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.storage_uri = storage_uri
        self.engine_config = engine_config
        self.batching = batching
        self.limits = limits
        self.artifact: Artifact | None = None
        # Not `self.engine`: KServe's base class uses that name for LLM engines it starts itself.
        self._engine: Engine | None = None
        self.batcher: DynamicBatcher[Job, Prediction] | None = None
        self._shape: codec.ModelShape | None = None

    def load(self) -> bool:
        """Fetch, verify and load the artifact, warm the engine. Raises on any problem: never half-ready."""
        directory = fetch(self.storage_uri, self.model_dir)
        self.artifact = load_artifact(directory)
        spec = self.artifact.spec
        self._engine = Engine(self.artifact.module, EvalTransform.from_spec(spec), self.engine_config)
        self._engine.warmup()
        self.batcher = DynamicBatcher(self._engine, self.batching)
        self._shape = codec.ModelShape(spec.crop_size, spec.num_classes, spec.top_k)
        logger.info(
            "model %s ready: %s (%s) from %s on %s/%s",
            self.name,
            spec.architecture or spec.format,
            spec.format,
            directory,
            self._engine.device,
            self._engine.precision,
        )
        self.ready = True
        return self.ready

    async def stop_serving(self) -> None:
        """Graceful shutdown: refuse new work, finish everything queued and in flight."""
        self.ready = False
        if self.batcher is not None:
            await self.batcher.close()

    def stop(self) -> None:
        self.ready = False
        if self._engine is not None:
            self._engine.close()

    # ------------------------------------------------------------------ request path

    async def __call__(self, body: Any, headers: dict[str, str] | None = None, verb: Any = None, **kwargs: Any) -> Any:
        """KServe's pipeline, counted: every outcome lands in predictor_requests_total."""
        start = time.perf_counter()
        metrics.INFLIGHT_REQUESTS.inc()
        status = errors.OUTCOME_ERROR  # also for cancellation, which no handler below sees
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
        # KServe's check assumes a dict or InferRequest; ours is a DecodedRequest the codec already checked.
        return payload

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> codec.DecodedRequest:
        assert self._shape is not None and self.batcher is not None
        received_at = time.monotonic()
        # Under overload most requests are refused: refuse them before paying for base64 and headers.
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
        k = codec.max_top_k(decoded)
        timeout_ms = self.batching.request_timeout_ms
        if timeout_ms is not None:
            # Decoding already spent part of the request's time: the batcher gets what is left.
            timeout_ms -= (time.monotonic() - decoded.received_at) * 1000
        predictions = await self.batcher.submit([Job(image, k) for image in decoded.images], timeout_ms)
        return decoded, predictions

    async def postprocess(
        self, result: Any, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        decoded, predictions = result
        assert self.artifact is not None
        if decoded.v2_request is None:
            return codec.encode_v1([p.top(decoded.top_k) for p in predictions], self.artifact.labels)
        return codec.encode_v2(decoded, predictions, self.artifact.labels, self.name)

    # ------------------------------------------------------------------ metadata

    def get_input_types(self) -> list[dict[str, Any]]:
        return codec.input_types(self.artifact.spec.crop_size if self.artifact else -1)

    def get_output_types(self) -> list[dict[str, Any]]:
        return codec.output_types()
