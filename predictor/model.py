"""The KServe `Model`: thin glue over artifact (load), codec (protocols), batching and engine."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Generic, Required, TypedDict, TypeVar, Unpack

import kserve
from kserve.protocol.infer_type import InferRequest, InferResponse

from . import codec, errors, metrics, triton
from .artifact import Artifact, fetch, load_artifact
from .batching import BatchingConfig, DynamicBatcher
from .engine import Engine, EngineConfig
from .jobs import Job, Prediction
from .limits import RequestLimits
from .preprocess import EvalTransform

logger = logging.getLogger(__name__)

JobT = TypeVar("JobT")


@dataclass(frozen=True)
class ModelInfo:
    """What the request path needs to decode requests and encode answers: no weights."""

    shape: codec.ModelShape
    labels: tuple[str, ...]


class ImageModel(kserve.Model):
    """The request path every role shares: decode and check with the codec, count each outcome,
    run the images somewhere (`infer`), encode the answer. Subclasses say where the images run:
    this process's engine (`ImageClassifier`), remote replicas, or a predictor behind a transformer."""

    # Where outcomes are counted; a role whose pod is scraped beside a predictor's counts under names of its own.
    request_metrics: metrics.RequestMetrics = metrics.PREDICTOR_REQUEST_METRICS
    # Which series Triton's statistics extension reads for this model.
    statistics_series: triton.StatisticsSeries = triton.PREDICTOR_SERIES

    def __init__(self, name: str, *, limits: RequestLimits, request_timeout_ms: float | None) -> None:
        super().__init__(name)
        metrics.bind_model(name)
        self.limits = limits
        self.request_timeout_ms = request_timeout_ms
        self.info: ModelInfo | None = None

    async def infer(self, jobs: list[Job], timeout_ms: float | None) -> list[Prediction]:
        """Run the jobs within `timeout_ms` (None: no deadline); one prediction per job, in order."""
        raise NotImplementedError

    def reject_if_full(self) -> None:
        """Raise ServerBusy when the images could not even be queued: checked before decoding."""

    async def __call__(self, body: Any, headers: dict[str, str] | None = None, verb: Any = None, **kwargs: Any) -> Any:
        """KServe's pipeline, counted: every outcome lands in `request_metrics` (predictor_requests_total)."""
        counted = self.request_metrics
        start = time.perf_counter()
        counted.inflight_requests.inc()
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
            counted.inflight_requests.dec()
            counted.requests.labels(status).inc()
            counted.request_seconds.labels(status).observe(time.perf_counter() - start)
            counted.last_request_timestamp_seconds.set(time.time())

    def validate(self, payload: Any) -> Any:
        # KServe's check assumes a dict or InferRequest; ours is a DecodedRequest the codec already checked.
        return payload

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> codec.DecodedRequest:
        if self.info is None:
            raise errors.ServerBusy("the model is still loading; retry later")
        received_at = time.monotonic()
        # Under overload most requests are refused: refuse them before paying for base64 and headers.
        self.reject_if_full()
        if isinstance(payload, InferRequest):
            decoded = codec.decode_v2(payload, self.info.shape, self.limits)
        else:
            decoded = codec.decode_v1(payload, self.info.shape, self.limits)
        decoded.received_at = received_at
        return decoded

    async def predict(
        self, decoded: codec.DecodedRequest, headers: dict[str, str] | None = None
    ) -> tuple[codec.DecodedRequest, list[Prediction]]:
        k = codec.max_top_k(decoded)
        timeout_ms = self.request_timeout_ms
        if timeout_ms is not None:
            # Decoding already spent part of the request's time: the images get what is left.
            timeout_ms -= (time.monotonic() - decoded.received_at) * 1000
        predictions = await self.infer([Job(image, k) for image in decoded.images], timeout_ms)
        return decoded, predictions

    async def postprocess(
        self, result: Any, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        decoded, predictions = result
        assert self.info is not None
        if decoded.v2_request is None:
            return codec.encode_v1([p.top(decoded.top_k) for p in predictions], self.info.labels)
        return codec.encode_v2(decoded, predictions, self.info.labels, self.name)

    # ------------------------------------------------------------------ metadata

    def get_input_types(self) -> list[dict[str, Any]]:
        return codec.input_types(self.info.shape.crop_size if self.info else -1)

    def get_output_types(self) -> list[dict[str, Any]]:
        return codec.output_types()


class ModelArgs(TypedDict, total=False):
    """What every batched role's model takes besides its own config: `role.ModelFactory`'s keywords."""

    model_dir: Required[str]
    storage_uri: str | None
    batching: BatchingConfig
    limits: RequestLimits


class BatchedImageModel(ImageModel, Generic[JobT]):
    """A role whose images wait in this process's dynamic batcher (built by the subclass's `load`):
    the artifact it reads, a shutdown that answers everything accepted, Triton's view of the queue."""

    def __init__(
        self,
        name: str,
        *,
        model_dir: str,
        storage_uri: str | None = None,
        batching: BatchingConfig = BatchingConfig(),
        limits: RequestLimits = RequestLimits(),
    ) -> None:
        super().__init__(name, limits=limits, request_timeout_ms=batching.request_timeout_ms)
        self.model_dir = model_dir
        self.storage_uri = storage_uri
        self.batching = batching
        self.batcher: DynamicBatcher[JobT, Prediction] | None = None

    async def stop_serving(self) -> None:
        """Graceful shutdown: refuse new work, finish everything queued and in flight."""
        self.ready = False
        if self.batcher is not None:
            await self.batcher.close()

    def reject_if_full(self) -> None:
        assert self.batcher is not None
        self.batcher.reject_if_full()

    def triton_parameters(self) -> dict[str, str]:
        """What Triton's model configuration says of this model beyond its tensors and queue."""
        return {"top_k": str(self.info.shape.default_top_k)} if self.info else {}

    def triton_config(self) -> dict[str, Any]:
        """Triton's model configuration (GET /v2/models/{name}/config)."""
        return triton.model_config(
            self.name,
            inputs=self.get_input_types(),
            outputs=self.get_output_types(),
            batching=self.batching,
            limits=self.limits,
            parameters=self.triton_parameters(),
        )


class ImageClassifier(BatchedImageModel[Job]):
    """The model in this process: artifact, engine and dynamic batcher."""

    def __init__(self, name: str, *, engine_config: EngineConfig = EngineConfig(), **args: Unpack[ModelArgs]) -> None:
        super().__init__(name, **args)
        self.engine_config = engine_config
        self.artifact: Artifact | None = None
        # Not `self.engine`: KServe's base class uses that name for LLM engines it starts itself.
        self._engine: Engine | None = None

    def load(self) -> bool:
        """Fetch, verify and load the artifact, warm the engine. Raises on any problem: never half-ready."""
        directory = fetch(self.storage_uri, self.model_dir)
        self.artifact = load_artifact(directory)
        spec = self.artifact.spec
        self._engine = Engine(self.artifact.module, EvalTransform.from_spec(spec), self.engine_config)
        self._engine.warmup()
        self.batcher = DynamicBatcher(self._engine, self.batching)
        self.info = ModelInfo(codec.ModelShape(spec.crop_size, spec.num_classes, spec.top_k), self.artifact.labels)
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

    def stop(self) -> None:
        self.ready = False
        if self._engine is not None:
            self._engine.close()

    async def infer(self, jobs: list[Job], timeout_ms: float | None) -> list[Prediction]:
        assert self.batcher is not None
        return await self.batcher.submit(jobs, timeout_ms)

    def triton_parameters(self) -> dict[str, str]:
        parameters = super().triton_parameters()
        if self.artifact is not None:
            spec = self.artifact.spec
            parameters |= {"format": spec.format, "num_classes": str(spec.num_classes)}
            if spec.architecture:
                parameters["architecture"] = spec.architecture
        if self._engine is not None:
            parameters |= {"device": str(self._engine.device), "precision": str(self._engine.precision)}
        return parameters
