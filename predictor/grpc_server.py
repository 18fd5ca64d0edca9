"""The gRPC side of the server: KServe's GRPCInferenceService on the bind address, with TLS,
reflection, and message limits reconciled with --max_body_bytes."""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grpc import aio
from grpc_reflection.v1alpha import reflection
from kserve.protocol.grpc import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer

from .limits import RequestLimits
from .tls import TLSConfig

if TYPE_CHECKING:
    from .server import ServerConfig

logger = logging.getLogger(__name__)

_GRPC_SERVICE = grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class GRPCInferenceServer(GRPCServer):
    """KServe's gRPC server on our bind address, with TLS, reflection and reconciled message limits."""

    def __init__(
        self,
        *args: Any,
        bind_address: str,
        reuse_port: bool,
        message_limits: GrpcMessageLimits,
        tls: TLSConfig,
        reflection: bool,
        **kwargs: Any,
    ):
        super().__init__(*args, kwargs={}, **kwargs)
        self._bind_address = bind_address
        self._reuse_port = reuse_port
        self._limits = message_limits
        self._tls = tls
        self._reflection = reflection

    async def start(self, max_workers: int) -> None:
        # KServe's start() hard-codes "[::]" and plain text; this is it with the bind address and TLS.
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(ExceptionToStatusInterceptor(),),
            options=[
                ("grpc.max_send_message_length", self._limits.send_bytes),
                ("grpc.max_receive_message_length", self._limits.receive_bytes),
                # gRPC shares ports by default; a lone server must fail on a taken port instead
                # of silently splitting traffic with whatever else listens there.
                ("grpc.so_reuseport", 1 if self._reuse_port else 0),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self._data_plane, self._model_repository_extension), self._server
        )
        if self._reflection:
            # grpcurl and other generic clients then need no .proto file.
            reflection.enable_server_reflection((_GRPC_SERVICE, reflection.SERVICE_NAME), self._server)
        host = f"[{self._bind_address}]" if ":" in self._bind_address else self._bind_address
        address = f"{host}:{self._port}"
        try:
            if self._tls.enabled:
                self._server.add_secure_port(address, self._tls.grpc_credentials())
            else:
                self._server.add_insecure_port(address)
        except RuntimeError as e:
            raise OSError(f"gRPC cannot listen on {address}: the port is taken or the address is not local") from e
        logger.info(
            "gRPC server on %s (%s): messages up to %d bytes in, %d out",
            address,
            "TLS" if self._tls.enabled else "plain text",
            self._limits.receive_bytes,
            self._limits.send_bytes,
        )
        await self._server.start()
        await self._server.wait_for_termination()


_UNLIMITED = -1  # what gRPC, and so KServe's flags, take for "no limit"


@dataclass(frozen=True)
class GrpcMessageLimits:
    """gRPC's message limits, reconciled with --max_body_bytes.

    --max_body_bytes caps every request, REST and gRPC, and wins: KServe's
    --grpc_max_receive_message_length may lower it for gRPC but not raise it, and is
    --max_body_bytes when not given. --grpc_max_send_message_length (responses) is taken as
    given, and is --max_body_bytes too when not."""

    receive_bytes: int
    send_bytes: int

    @classmethod
    def reconcile(cls, config: ServerConfig, limits: RequestLimits) -> GrpcMessageLimits:
        cap = limits.max_body_bytes
        receive, send = config.grpc_max_receive_message_length, config.grpc_max_send_message_length
        if receive is not None and (receive == _UNLIMITED or receive > cap):
            given = "-1 (unlimited)" if receive == _UNLIMITED else str(receive)
            raise ValueError(
                f"--grpc_max_receive_message_length={given} is more than --max_body_bytes={cap}, which caps every "
                "request on REST and gRPC and wins: raise --max_body_bytes as well, or leave "
                "--grpc_max_receive_message_length out (it is then --max_body_bytes)"
            )
        if receive is not None and receive < 1:
            raise ValueError(f"--grpc_max_receive_message_length must be an integer in 1..{cap}, got {receive}")
        if send is not None and send != _UNLIMITED and send < 1:
            raise ValueError(f"--grpc_max_send_message_length must be an integer >= 1 or -1 (unlimited), got {send}")
        return cls(receive_bytes=cap if receive is None else receive, send_bytes=cap if send is None else send)
