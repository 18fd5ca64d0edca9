"""The load generator's clients: every request body is built once and sent as bytes.

It shares the CPUs with the server, so a request must cost it almost nothing: gRPC goes through
grpc.aio with a pre-serialised ModelInferRequest and no per-call serializer (tritonclient.grpc
cannot share a process with kserve, which engine mode imports); REST posts pre-built bodies over
a keep-alive pool.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import cast

import httpx

from .. import payloads

PROTOCOLS = ("grpc", "rest", "v1")  # v2 gRPC, v2 REST binary, v1 JSON base64
# v2 gRPC with the image already decoded and cropped to the model's size (UINT8 `pixels`, cropped=true):
# what a transformer sends, so a hop step through one measures the hop itself, not moved CPU work.
PIXELS = "pixels"
GRPC_PROTOCOLS = ("grpc", PIXELS)
REQUEST_TIMEOUT_S = 30.0  # a request slower than this is an error, and bounds a step's drain


@dataclass(frozen=True)
class ClientSpec:
    """What a client needs, as plain data: client processes rebuild their clients from it."""

    protocol: str
    base_url: str
    grpc_target: str
    model_name: str
    image: bytes
    grpc_request: bytes  # built by the parent: a client process need not import kserve
    grpc_channels: int
    max_connections: int

    def share(self, processes: int) -> ClientSpec:
        """One client process's part of the connections."""
        return dataclasses.replace(
            self,
            grpc_channels=max(1, self.grpc_channels // processes),
            max_connections=max(1, -(-self.max_connections // processes)),
        )


class GrpcClient:
    """Concurrent clients sharing `channels` HTTP/2 connections, round robin. One channel is how a
    single gRPC caller behaves; several spread over the server's --workers (one connection lands
    on one worker)."""

    def __init__(self, target: str, request: bytes, channels: int = 1) -> None:
        import grpc

        self._grpc = grpc
        self._request = request
        options = [
            ("grpc.max_receive_message_length", 64 << 20),
            # Without it, channels to one target share one connection.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        self._channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
        # No serializers: the request is sent as pre-built bytes and the reply stays bytes.
        self._calls = [channel.unary_unary(payloads.GRPC_INFER_METHOD) for channel in self._channels]
        self._next = itertools.cycle(self._calls)

    async def send(self) -> str:
        """One request; "ok" or an error key such as grpc_UNAVAILABLE."""
        try:
            await next(self._next)(self._request, timeout=REQUEST_TIMEOUT_S)
        except self._grpc.aio.AioRpcError as e:
            return f"grpc_{e.code().name}"
        return "ok"

    async def top_class(self) -> str:
        return payloads.top_class_grpc(await self._calls[0](self._request, timeout=REQUEST_TIMEOUT_S))

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


class HttpClient:
    """v2 REST binary or v1 JSON base64 over a keep-alive connection pool as large as the concurrency."""

    def __init__(self, base_url: str, model_name: str, protocol: str, image: bytes, max_connections: int) -> None:
        if protocol == "rest":
            self._url = base_url + payloads.v2_path(model_name)
            self._body, self._headers = payloads.v2_binary_images(image)
        else:
            self._url = base_url + payloads.v1_path(model_name)
            self._body = payloads.to_json(payloads.v1_body(image))
            self._headers = {"Content-Type": "application/json"}
        self._protocol = protocol
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_S)

    async def send(self) -> str:
        """One request; "ok" or an error key such as http_503 or http_timeout."""
        try:
            r = await self._client.post(self._url, content=self._body, headers=self._headers)
        except httpx.TimeoutException:
            return "http_timeout"
        except httpx.HTTPError as e:
            return f"http_{type(e).__name__}"
        return "ok" if r.status_code == 200 else f"http_{r.status_code}"

    async def top_class(self) -> str:
        r = await self._client.post(self._url, content=self._body, headers=self._headers)
        r.raise_for_status()
        if self._protocol == "v1":
            return cast(str, payloads.v1_predictions(r.json())[0]["class_names"][0])
        length = r.headers.get(payloads.BINARY_HEADER)
        return payloads.top_class_v2_binary(r.content, int(length) if length is not None else None)

    async def close(self) -> None:
        await self._client.aclose()


def build_client(spec: ClientSpec) -> GrpcClient | HttpClient:
    if spec.protocol in GRPC_PROTOCOLS:
        return GrpcClient(spec.grpc_target, spec.grpc_request, spec.grpc_channels)
    return HttpClient(spec.base_url, spec.model_name, spec.protocol, spec.image, spec.max_connections)
