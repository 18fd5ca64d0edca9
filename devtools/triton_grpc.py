"""tritonclient.grpc, called in a child process.

Triton's protos and KServe's both declare the protobuf package `inference`, and protobuf
refuses to load both into one process; the tests import KServe, so the Triton gRPC
client runs next door and its results come back pickled.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

_CHILD = r"""
import pickle, sys
import numpy as np
import tritonclient.grpc as g
from tritonclient.utils import InferenceServerException
req = pickle.load(sys.stdin.buffer)
root = req.get("root_certificates")
client = g.InferenceServerClient(req["url"], ssl=root is not None, root_certificates=root)
try:
    if req["op"] == "infer":
        inputs = []
        for name, datatype, array in req["inputs"]:
            inp = g.InferInput(name, list(array.shape), datatype)
            inp.set_data_from_numpy(array)
            inputs.append(inp)
        outputs = [g.InferRequestedOutput(n, class_count=c) for n, c in req["outputs"]] if req["outputs"] else None
        result = client.infer(req["model"], inputs, outputs=outputs, parameters=req["parameters"])
        names = [o.name for o in result.get_response().outputs]
        out = {"outputs": {n: result.as_numpy(n) for n in names}}
    elif req["op"] == "metadata":
        out = {"metadata": client.get_model_metadata(req["model"], as_json=True)}
    elif req["op"] == "health":
        out = {"health": (client.is_server_live(), client.is_server_ready(), client.is_model_ready(req["model"]))}
except InferenceServerException as e:
    out = {"error": (e.status(), e.message())}
pickle.dump(out, sys.stdout.buffer)
"""


@dataclass
class TritonGrpcError(Exception):
    status: str
    message: str


def _run(request: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", _CHILD], input=pickle.dumps(request), capture_output=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"tritonclient child failed:\n{done.stderr.decode()[-3000:]}")
    out = cast(dict[str, Any], pickle.loads(done.stdout))
    if "error" in out:
        raise TritonGrpcError(*out["error"])
    return out


def infer(
    url: str,
    model: str,
    inputs: list[tuple[str, str, np.ndarray]],
    outputs: list[tuple[str, int]] | None = None,
    parameters: dict[str, Any] | None = None,
    root_certificates: str | None = None,
) -> dict[str, np.ndarray]:
    """inputs: (name, datatype, array); outputs: (name, class_count or 0); `root_certificates`:
    a PEM file to trust, for a server that speaks TLS."""
    done = _run(
        {
            "op": "infer",
            "url": url,
            "model": model,
            "inputs": inputs,
            "outputs": outputs,
            "parameters": parameters,
            "root_certificates": root_certificates,
        }
    )
    return cast(dict[str, np.ndarray], done["outputs"])


def metadata(url: str, model: str) -> dict[str, Any]:
    return cast(dict[str, Any], _run({"op": "metadata", "url": url, "model": model})["metadata"])


def health(url: str, model: str) -> tuple[bool, bool, bool]:
    return cast(tuple[bool, bool, bool], _run({"op": "health", "url": url, "model": model})["health"])
