"""The hop to the predictor: one gRPC ModelInfer per coalesced batch, over a pool of channels.

A batch of cropped images travels as one UINT8 `pixels` tensor [N, S, S, 3] in
`raw_input_contents` (S*S*3 bytes an image: 150 KB at 224 px, a quarter of FP32), with the
parameter `cropped` so the predictor only scales and normalises. Already-preprocessed FP32
tensors travel as they came, as `tensor`.

Every gRPC failure becomes an error with the status a client should see: UNAVAILABLE (the
predictor is overloaded, draining, restarting or gone) is 503 with Retry-After,
DEADLINE_EXCEEDED 504, INVALID_ARGUMENT 400 with the predictor's own message, anything else 502.
"""

from __future__ import annotations

import itertools
import json
import logging
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from grpc import StatusCode
from kserve.errors import InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from ..codec import INPUT_PIXELS, INPUT_TENSOR, OUTPUT_INDICES, OUTPUT_NAMES, OUTPUT_PROBABILITIES, PIXELS_CROPPED
from ..errors import DeadlineExceeded, PredictorError, ServerBusy
from ..jobs import Prediction
from . import metrics

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1


class PredictorFailed(PredictorError):
    """The predictor answered with an error that is neither the client's nor load (502 Bad Gateway)."""

    http_status = 502
    status_code = StatusCode.INTERNAL
    metric_label = "error"


@dataclass(frozen=True)
class Batch:
    """Images of one kind for one call: uint8 [N, S, S, 3] crops, or float32 [N, 3, S, S] tensors."""

    array: np.ndarray
    top_k: int

    @property
    def cropped(self) -> bool:
        return bool(self.array.dtype == np.uint8)


def hop_error(error: grpc.aio.AioRpcError, timeout_s: float) -> Exception:
    """The error a client of the transformer gets for a failed predictor call."""
    code, details = error.code(), error.details() or ""
    if code == StatusCode.UNAVAILABLE:
        return ServerBusy(f"predictor unavailable: {details or 'no connection'}", RETRY_AFTER_S)
    if code == StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(
            f"the predictor did not answer within the request's remaining {timeout_s * 1000:.0f} ms"
        )
    if code == StatusCode.INVALID_ARGUMENT:
        refused: Exception = InvalidInput(f"predictor: {details}")
        return refused
    return PredictorFailed(f"predictor answered {code.name}: {details or 'no details'}")


class ChannelPool:
    """`size` channels used in turn. Each balances round_robin over every address the target
    resolves to, with connections of its own; a channel older than `max_age_s` is replaced (the old
    one closes once its calls finish), which re-resolves the host and so finds new pods."""

    def __init__(
        self,
        target: str,
        *,
        size: int,
        max_age_s: float,
        max_message_bytes: int,
        use_ssl: bool = False,
        retries: int = 0,
        close_grace_s: float = 30.0,
    ) -> None:
        self.target = target
        self._max_age_s = max_age_s
        self._close_grace_s = close_grace_s
        self._credentials = grpc.ssl_channel_credentials() if use_ssl else None
        self._options: list[tuple[str, Any]] = [
            ("grpc.lb_policy_name", "round_robin"),
            # Without it, channels with the same arguments share one connection per address.
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if retries > 0:
            # Only UNAVAILABLE is retried, on another address where there is one; never past the deadline.
            policy = {
                "maxAttempts": retries + 1,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            }
            config = {
                "methodConfig": [{"name": [{"service": "inference.GRPCInferenceService"}], "retryPolicy": policy}]
            }
            self._options.append(("grpc.service_config", json.dumps(config)))
        self._size = size
        # Opened on first use: a grpc.aio channel belongs to the event loop it was made on, and
        # the server's loop starts after the model has loaded.
        self._slots: list[tuple[Any, Any, float]] = []
        self._turn = itertools.cycle(range(size))
        self._retired: set[Any] = set()

    def _open(self) -> tuple[Any, Any, float]:
        if self._credentials is not None:
            channel = grpc.aio.secure_channel(self.target, self._credentials, options=self._options)
        else:
            channel = grpc.aio.insecure_channel(self.target, options=self._options)
        return channel, pb_grpc.GRPCInferenceServiceStub(channel), time.monotonic()

    def stub(self) -> Any:
        """The next channel's stub, replacing that channel first when it is too old."""
        if not self._slots:
            self._slots = [self._open() for _ in range(self._size)]
        i = next(self._turn)
        channel, stub, opened_at = self._slots[i]
        if self._max_age_s and time.monotonic() - opened_at > self._max_age_s:
            self._slots[i] = self._open()
            self._retire(channel)
            stub = self._slots[i][1]
        return stub

    def _retire(self, channel: Any) -> None:
        import asyncio

        task = asyncio.get_running_loop().create_task(channel.close(grace=self._close_grace_s))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        for channel, _, _ in self._slots:
            await channel.close(grace=self._close_grace_s)
        for task in list(self._retired):
            await task


class PredictorClient:
    def __init__(
        self, pool: ChannelPool, model_name: str, *, max_timeout_s: float, labels: tuple[str, ...] = ()
    ) -> None:
        """`labels`: the transformer's own (from its model.json); every answer's class names are
        checked against them, so a predictor serving another artifact fails loudly, not with wrong names."""
        self.pool = pool
        self.model_name = model_name
        self.max_timeout_s = max_timeout_s
        self.labels = labels

    async def infer(self, batch: Batch, deadline: float) -> list[Prediction]:
        """One ModelInfer for the whole batch, answered before `deadline` (time.monotonic())."""
        timeout_s = min(deadline - time.monotonic(), self.max_timeout_s)
        if timeout_s <= 0:
            raise DeadlineExceeded("request timeout passed before the call to the predictor")
        request = self._request(batch)
        started = time.perf_counter()
        code = "OK"
        try:
            response = await self.pool.stub().ModelInfer(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            code = e.code().name
            raise hop_error(e, timeout_s) from e
        finally:
            metrics.PREDICTOR_CALL_SECONDS.labels(code).observe(time.perf_counter() - started)
        predictions, names = _predictions(response, len(batch.array))
        self._check_labels(predictions, names)
        return predictions

    def _check_labels(self, predictions: list[Prediction], names: list[list[str]]) -> None:
        for prediction, row in zip(predictions, names, strict=True):
            for index, name in zip(prediction.indices, row, strict=True):
                ours = self.labels[index] if index < len(self.labels) else None
                if ours != name:
                    logger.error("the predictor names class %d %r, the transformer's labels %r", index, name, ours)
                    raise PredictorFailed(
                        f"the predictor names class {index} {name!r} where the transformer's labels say {ours!r}: "
                        "the two serve different artifacts; deploy both from one storageUri"
                    )

    def _request(self, batch: Batch) -> Any:
        request = pb.ModelInferRequest(model_name=self.model_name)
        request.parameters["top_k"].int64_param = batch.top_k
        name, datatype = (INPUT_PIXELS, "UINT8") if batch.cropped else (INPUT_TENSOR, "FP32")
        tensor = request.inputs.add(name=name, datatype=datatype, shape=list(batch.array.shape))
        if batch.cropped:
            tensor.parameters[PIXELS_CROPPED].bool_param = True
        request.raw_input_contents.append(np.ascontiguousarray(batch.array).tobytes())
        for output in (OUTPUT_INDICES, OUTPUT_PROBABILITIES, OUTPUT_NAMES):
            request.outputs.add(name=output)
        return request

    async def model_ready(self) -> bool:
        try:
            response = await self.pool.stub().ModelReady(pb.ModelReadyRequest(name=self.model_name), timeout=2)
        except grpc.aio.AioRpcError:
            return False
        return bool(response.ready)

    async def close(self) -> None:
        await self.pool.close()


_NUMPY = {"INT64": np.int64, "FP32": np.float32}
_CONTENTS = {"INT64": "int64_contents", "FP32": "fp32_contents"}


def _predictions(response: Any, count: int) -> tuple[list[Prediction], list[list[str]]]:
    """The rows of the answer, and each row's class names."""
    outputs: dict[str, np.ndarray] = {}
    raw: Sequence[bytes] = response.raw_output_contents
    for i, output in enumerate(response.outputs):
        shape = list(output.shape)
        if len(raw) == len(response.outputs):
            if output.datatype == "BYTES":
                array = np.array(_length_prefixed(raw[i]), dtype=np.object_)
            elif output.datatype in _NUMPY:
                array = np.frombuffer(raw[i], dtype=_NUMPY[output.datatype])
            else:
                continue
        elif output.datatype == "BYTES":
            array = np.array(list(output.contents.bytes_contents), dtype=np.object_)
        elif output.datatype in _NUMPY:
            array = np.asarray(getattr(output.contents, _CONTENTS[output.datatype]), dtype=_NUMPY[output.datatype])
        else:
            continue
        outputs[output.name] = array.reshape(shape)
    try:
        indices, probabilities, names = (outputs[o] for o in (OUTPUT_INDICES, OUTPUT_PROBABILITIES, OUTPUT_NAMES))
    except KeyError as e:
        raise PredictorFailed(f"the predictor's answer lacks an output it was asked for: {e}") from e
    if indices.shape[0] != count or not indices.shape == probabilities.shape == names.shape:
        raise PredictorFailed(
            f"the predictor answered {indices.shape[0]} rows for {count} images (shapes {list(indices.shape)}, "
            f"{list(probabilities.shape)}, {list(names.shape)})"
        )
    predictions = [
        Prediction(indices=[int(x) for x in i], probabilities=[float(p) for p in row])
        for i, row in zip(indices, probabilities, strict=True)
    ]
    return predictions, [[bytes(n).decode(errors="replace") for n in row] for row in names]


def _length_prefixed(raw: bytes) -> list[bytes]:
    """Triton's BYTES wire format: a 4-byte little-endian length before each element."""
    items, offset = [], 0
    while offset + 4 <= len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return items
