"""Classify image files with a running predictor, over v1 REST, v2 REST or v2 gRPC.

python scripts/client.py cat.jpg dog.png --url localhost:8080 --protocol v2
python scripts/client.py cat.jpg --url localhost:8081 --protocol grpc --top_k 3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from pathlib import Path

import httpx
import numpy as np


def _v1(url: str, model: str, images: list[bytes], top_k: int) -> list[dict]:
    body = {"instances": [{"image": {"b64": base64.b64encode(i).decode()}} for i in images], "top_k": top_k}
    r = httpx.post(f"http://{url}/v1/models/{model}:predict", json=body, timeout=60)
    r.raise_for_status()
    return r.json()["predictions"]


def _v2(url: str, model: str, images: list[bytes], top_k: int) -> list[dict]:
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [len(images)],
                "data": [base64.b64encode(i).decode() for i in images],
            }
        ],
        "parameters": {"top_k": top_k},
    }
    r = httpx.post(f"http://{url}/v2/models/{model}/infer", json=body, timeout=60)
    r.raise_for_status()
    outputs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    return [
        {name: outputs[name][i * top_k : (i + 1) * top_k] for name in ("class_names", "class_indices", "probabilities")}
        for i in range(len(images))
    ]


def _grpc(url: str, model: str, images: list[bytes], top_k: int) -> list[dict]:
    # Importing kserve parses sys.argv with the model server's parser; hide ours from it.
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        from kserve import InferenceGRPCClient
        from kserve.protocol.infer_type import InferInput, InferRequest
    finally:
        sys.argv = argv

    async def call() -> list[dict]:
        tensor = InferInput("image", [len(images)], "BYTES")
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
        client = InferenceGRPCClient(url, timeout=60)
        try:
            response = await client.infer(
                InferRequest(model_name=model, infer_inputs=[tensor], parameters={"top_k": top_k})
            )
        finally:
            await client.close()
        outputs = {o.name: o.as_numpy() for o in response.outputs}
        return [
            {
                "class_names": [n.decode() if isinstance(n, bytes) else n for n in outputs["class_names"][i]],
                "class_indices": outputs["class_indices"][i].tolist(),
                "probabilities": outputs["probabilities"][i].tolist(),
            }
            for i in range(len(images))
        ]

    return asyncio.run(call())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--url", default="localhost:8080", help="host:port (8080 REST, 8081 gRPC by default)")
    parser.add_argument("--protocol", choices=("v1", "v2", "grpc"), default="v2")
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--top_k", type=int, default=5)
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
