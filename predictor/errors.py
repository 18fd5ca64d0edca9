"""Errors of our own that KServe has no type for, each carrying how it is reported everywhere:
its REST status, its gRPC code and its outcome label on `predictor_requests_total`.

Everything a client did wrong is KServe's `InvalidInput` (400 / INVALID_ARGUMENT, label
"invalid"). The errors here are about load or configuration, not about the request. Over
REST one handler (in `predictor.server`) answers all of them; over gRPC they are
`grpc_interceptor` exceptions, which KServe's interceptor passes through with `status_code`.
"""

from __future__ import annotations

from typing import ClassVar

from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException
from kserve.errors import InvalidInput

# predictor_requests_total{status=...}: ok | invalid | busy | timeout | error
OUTCOME_OK = "ok"
OUTCOME_INVALID = "invalid"
OUTCOME_ERROR = "error"


class PredictorError(GrpcException):
    """Base class: a reason for the client, and how it is reported on REST, gRPC and /metrics."""

    http_status: ClassVar[int] = 500
    status_code = StatusCode.INTERNAL  # the name grpc_interceptor reads
    metric_label: ClassVar[str] = OUTCOME_ERROR

    def __init__(self, reason: str) -> None:
        super().__init__(details=reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason

    def headers(self) -> dict[str, str]:
        """Extra REST response headers."""
        return {}


class ServerBusy(PredictorError):
    """The queue is full or the server is draining: retry later (503 + Retry-After, gRPC UNAVAILABLE)."""

    http_status = 503
    status_code = StatusCode.UNAVAILABLE
    metric_label = "busy"

    def __init__(self, reason: str, retry_after_s: int = 1) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class DeadlineExceeded(PredictorError):
    """The request's deadline passed before the device got to it (504, DEADLINE_EXCEEDED)."""

    http_status = 504
    status_code = StatusCode.DEADLINE_EXCEEDED
    metric_label = "timeout"


class RepositoryDisabled(PredictorError):
    """Loading and unloading through the v2 repository API is switched off (403 / PERMISSION_DENIED):
    an open management API is how TorchServe's ShellTorch flaws began."""

    http_status = 403
    status_code = StatusCode.PERMISSION_DENIED

    def __init__(self) -> None:
        super().__init__("the model repository API is disabled on this server: models are set at deploy time")


def metric_label(error: BaseException) -> str:
    """The `status` label of predictor_requests_total for a request that raised `error`."""
    if isinstance(error, PredictorError):
        return error.metric_label
    if isinstance(error, InvalidInput):
        return OUTCOME_INVALID
    return OUTCOME_ERROR
