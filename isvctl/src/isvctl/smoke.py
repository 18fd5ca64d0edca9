"""`make predict`: one v1 and one v2 request against the deployed service, with a generated image.

The payloads follow the predictor's contract: v1 {"instances": [{"image": {"b64": ...}}]}, v2 one
BYTES input holding the encoded image. tests/deploy/test_smoke.py sends them to a real predictor.
"""

from __future__ import annotations

import base64
import json
import struct
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass

from .errors import DeployError


def tiny_png(width: int = 32, height: int = 32) -> bytes:
    """A valid RGB PNG (a gradient), so the smoke test needs no file and no imaging library."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 8 % 256, y * 8 % 256, 128)) for x in range(width)) for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@dataclass(frozen=True)
class Request:
    label: str
    url: str
    body: bytes
    host: str | None


def requests_for(service_url: str, model: str, ingress_url: str | None) -> list[Request]:
    image_b64 = base64.b64encode(tiny_png()).decode()
    v1 = {"instances": [{"image": {"b64": image_b64}}]}
    v2 = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [image_b64]}]}
    base, host = service_url.rstrip("/"), None
    if ingress_url:
        # Through a port-forward or load balancer: the gateway routes on the Host header.
        host = urllib.parse.urlsplit(service_url).netloc
        base = ingress_url.rstrip("/")
    return [
        Request("v1", f"{base}/v1/models/{model}:predict", json.dumps(v1).encode(), host),
        Request("v2", f"{base}/v2/models/{model}/infer", json.dumps(v2).encode(), host),
    ]


def describe(request: Request) -> str:
    host = f" (Host: {request.host})" if request.host else ""
    return f"POST {request.url}{host} [{len(request.body)} bytes of JSON]"


def send(request: Request, timeout_s: float) -> str:
    headers = {"Content-Type": "application/json"}
    if request.host:
        headers["Host"] = request.host
    http_request = urllib.request.Request(request.url, data=request.body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(http_request, timeout=timeout_s) as response:
            return f"{request.label}: HTTP {response.status} {response.read(300).decode(errors='replace')}"
    except urllib.error.HTTPError as exc:
        raise DeployError(
            f"{request.label} smoke request failed: HTTP {exc.code} {exc.read(300).decode(errors='replace')}"
        ) from None
    except (urllib.error.URLError, TimeoutError) as exc:
        raise DeployError(f"{request.label} smoke request could not reach {request.url}: {exc}") from None
