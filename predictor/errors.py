"""Errors of our own that KServe has no type for, with the status each maps to.

Everything a client did wrong is KServe's `InvalidInput` (400 / INVALID_ARGUMENT).
These two are about load, not about the request, so they carry their own status:
REST handlers are registered in `predictor.server`; over gRPC they are
`grpc_interceptor` exceptions, which KServe's interceptor passes through.
"""

from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException


class ServerBusy(GrpcException):
    """The queue is full: retry later (503 + Retry-After, gRPC UNAVAILABLE)."""

    status_code = StatusCode.UNAVAILABLE

    def __init__(self, reason: str, retry_after_s: int = 1):
        super().__init__(details=reason)
        self.reason = reason
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return self.reason


class DeadlineExceeded(GrpcException):
    """The request's deadline passed before the device got to it (504, DEADLINE_EXCEEDED)."""

    status_code = StatusCode.DEADLINE_EXCEEDED

    def __init__(self, reason: str):
        super().__init__(details=reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason
