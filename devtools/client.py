"""Classify image files with a running predictor, over v1 REST, v2 REST or v2 gRPC.

    python scripts/client.py cat.jpg dog.png --url localhost:8080 --protocol v2
    python scripts/client.py cat.jpg --url localhost:8081 --protocol grpc --top_k 3

Prints one JSON line per image: its class names, class indices and probabilities, best first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, cast

import httpx

from . import payloads
from .payloads import Prediction

TIMEOUT_S = 60


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(url, json=body, timeout=TIMEOUT_S)
    r.raise_for_status()
    return cast(dict[str, Any], r.json())


def _v1(url: str, model: str, images: list[bytes], top_k: int) -> list[Prediction]:
    body = payloads.v1_body(*images, top_k=top_k)
    return payloads.v1_predictions(_post(f"http://{url}{payloads.v1_path(model)}", body))


def _v2(url: str, model: str, images: list[bytes], top_k: int) -> list[Prediction]:
    body = payloads.v2_body(*images, top_k=top_k)
    return payloads.v2_predictions(_post(f"http://{url}{payloads.v2_path(model)}", body))


def _grpc(url: str, model: str, images: list[bytes], top_k: int) -> list[Prediction]:
    return asyncio.run(payloads.grpc_predict(url, model, *images, top_k=top_k, timeout_s=TIMEOUT_S))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="client.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--url", default="localhost:8080", help="host:port (8080 REST, 8081 gRPC by default)")
    parser.add_argument("--protocol", choices=("v1", "v2", "grpc"), default="v2")
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--top_k", type=int, default=5)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    images = [p.read_bytes() for p in args.images]
    call = {"v1": _v1, "v2": _v2, "grpc": _grpc}[args.protocol]
    try:
        predictions = call(args.url, args.model, images, args.top_k)
    except httpx.HTTPStatusError as e:
        print(f"{e.response.status_code}: {e.response.text}", file=sys.stderr)
        return 1
    for path, p in zip(args.images, predictions, strict=False):
        print(json.dumps({"image": str(path), **p}))
    return 0
