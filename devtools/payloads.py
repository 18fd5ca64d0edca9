"""Request bodies for every protocol the predictor speaks, and readers for its answers.

- v1 REST: `{"instances": [{"image": {"b64": ...}}]}` (or TF-Serving's bare `{"b64": ...}`);
- v2 REST JSON: a BYTES input `image` of base64 strings;
- v2 REST binary (the binary tensor data extension): a JSON header, then the raw tensors;
- v2 gRPC: KServe's `ModelInferRequest` / `InferRequest`, images as raw BYTES elements.

A prediction, whatever the protocol, reads back as one dict per image with the keys of `OUTPUTS`.
KServe is imported only by the gRPC builders: a load generator or a smoke test need not load it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import sys
from collections.abc import Iterator, Sequence
from typing import Any, cast

OUTPUTS = ("class_names", "probabilities", "class_indices")
BINARY_HEADER = "inference-header-content-length"
GRPC_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
DATATYPES = {"float32": "FP32", "uint8": "UINT8", "int64": "INT64"}  # numpy dtype -> v2 datatype

Prediction = dict[str, list[Any]]


def v1_path(model: str) -> str:
    return f"/v1/models/{model}:predict"


def v2_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


def to_json(body: Any) -> bytes:
    return json.dumps(body).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ----------------------------------------------------------------------------- v1


def v1_body(*images: bytes, top_k: int | None = None, bare: bool = False) -> dict[str, Any]:
    """`bare`: TF-Serving's `{"b64": ...}` instances instead of `{"image": {"b64": ...}}`."""
    instances = [{"b64": b64(i)} if bare else {"image": {"b64": b64(i)}} for i in images]
    return {"instances": instances} | ({"top_k": top_k} if top_k is not None else {})


def v1_predictions(response: dict[str, Any]) -> list[Prediction]:
    return cast(list[Prediction], response["predictions"])


# ----------------------------------------------------------------------------- v2 JSON


def v2_input(name: str, datatype: str, shape: Sequence[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": data}


def v2_body(*images: bytes, top_k: int | None = None) -> dict[str, Any]:
    """The images as one BYTES input `image`, base64 in JSON."""
    body: dict[str, Any] = {"inputs": [v2_input("image", "BYTES", [len(images)], [b64(i) for i in images])]}
    return body | ({"parameters": {"top_k": top_k}} if top_k is not None else {})


def v2_outputs(response: dict[str, Any]) -> dict[str, list[Any]]:
    """A v2 JSON answer's outputs: name -> flat data."""
    return {o["name"]: o["data"] for o in response["outputs"]}


def v2_predictions(response: dict[str, Any]) -> list[Prediction]:
    """A v2 JSON answer, one dict per image (outputs are [images, top_k])."""
    outputs = {o["name"]: o for o in response["outputs"]}
    images, top_k = outputs["class_names"]["shape"]
    return [{name: outputs[name]["data"][i * top_k : (i + 1) * top_k] for name in OUTPUTS} for i in range(images)]


# ----------------------------------------------------------------------------- v2 binary


def bytes_element(data: bytes) -> bytes:
    """Triton's BYTES wire format: 4-byte little-endian length, then the bytes."""
    return struct.pack("<I", len(data)) + data


def v2_binary_body(header: dict[str, Any], binary: bytes = b"") -> tuple[bytes, dict[str, str]]:
    """The JSON header, then the binary data; with the headers that say where one ends."""
    head = to_json(header)
    return head + binary, {"content-type": "application/octet-stream", BINARY_HEADER: str(len(head))}


def v2_binary_request(
    name: str,
    datatype: str,
    shape: Sequence[int],
    raw: bytes,
    *,
    binary_data_size: int | None = None,
    binary_outputs: bool = False,
) -> tuple[bytes, dict[str, str]]:
    """One input sent as binary (`binary_data_size` may lie; it defaults to the truth)."""
    size = len(raw) if binary_data_size is None else binary_data_size
    header: dict[str, Any] = {
        "inputs": [{"name": name, "datatype": datatype, "shape": list(shape), "parameters": {"binary_data_size": size}}]
    }
    if binary_outputs:
        header["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in OUTPUTS]
    return v2_binary_body(header, raw)


def v2_binary_tensor(name: str, array: Any) -> tuple[bytes, dict[str, str]]:
    """A numpy array as one binary input of its own shape and datatype."""
    return v2_binary_request(name, DATATYPES[str(array.dtype)], array.shape, array.tobytes())


def v2_binary_images(*images: bytes) -> tuple[bytes, dict[str, str]]:
    """The images as binary BYTES, and every output asked for in binary too."""
    raw = b"".join(bytes_element(i) for i in images)
    return v2_binary_request("image", "BYTES", [len(images)], raw, binary_outputs=True)


def _first_bytes_element(raw: bytes) -> bytes:
    (length,) = struct.unpack_from("<I", raw, 0)
    return raw[4 : 4 + length]


def top_class_v2_binary(body: bytes, header_length: int | None) -> str:
    """The first image's top class from a v2 binary answer (JSON outputs where the server sent JSON)."""
    header = json.loads(body[:header_length] if header_length is not None else body)
    offset = header_length or 0
    for out in header["outputs"]:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if out["name"] == "class_names":
            return _first_bytes_element(body[offset:]).decode() if size is not None else out["data"][0]
        offset += size or 0
    raise ValueError("REST response has no class_names output")


# ----------------------------------------------------------------------------- v2 gRPC


@contextlib.contextmanager
def _argv_hidden() -> Iterator[None]:
    # Importing kserve parses sys.argv with the model server's parser: a program's own flags
    # (say --model, a prefix of two of kserve's) would make it exit.
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        yield
    finally:
        sys.argv = argv


def grpc_request_bytes(model: str, *images: bytes) -> bytes:
    """A serialised ModelInferRequest: a load generator sends it as is, without serialising per call."""
    with _argv_hidden():
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="image", datatype="BYTES", shape=[len(images)])
    request.raw_input_contents.append(b"".join(bytes_element(i) for i in images))
    return cast(bytes, request.SerializeToString())


def grpc_pixels_request_bytes(model: str, pixels: Any, *, cropped: bool = True) -> bytes:
    """A serialised ModelInferRequest carrying uint8 HWC `pixels` ([N, H, W, 3]) as one raw UINT8 tensor;
    `cropped`: already resized and cropped to the model's crop size, as a transformer sends them."""
    with _argv_hidden():
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="pixels", datatype="UINT8", shape=list(pixels.shape))
    if cropped:
        tensor.parameters["cropped"].bool_param = True
    request.raw_input_contents.append(pixels.tobytes())
    return cast(bytes, request.SerializeToString())


def top_class_grpc(raw: bytes) -> str:
    """The first image's top class from a serialised ModelInferResponse."""
    with _argv_hidden():
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    response = pb.ModelInferResponse.FromString(raw)
    for i, out in enumerate(response.outputs):
        if out.name == "class_names":
            if response.raw_output_contents:
                return _first_bytes_element(response.raw_output_contents[i]).decode()
            return cast(bytes, out.contents.bytes_contents[0]).decode()
    raise ValueError("gRPC response has no class_names output")


def infer_request(model: str, *images: bytes, top_k: int | None = None) -> Any:
    """KServe's InferRequest for its InferenceGRPCClient: the images as binary BYTES."""
    import numpy as np

    with _argv_hidden():
        from kserve.protocol.infer_type import InferInput, InferRequest

    tensor = InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    parameters = {"top_k": top_k} if top_k is not None else None
    return InferRequest(model_name=model, infer_inputs=[tensor], parameters=parameters)


def infer_response_predictions(response: Any) -> list[Prediction]:
    """KServe's InferResponse, one dict per image."""
    outputs = {o.name: o.as_numpy() for o in response.outputs}
    return [
        {
            "class_names": [n.decode() if isinstance(n, bytes) else n for n in outputs["class_names"][i]],
            "class_indices": outputs["class_indices"][i].tolist(),
            "probabilities": outputs["probabilities"][i].tolist(),
        }
        for i in range(len(outputs["class_names"]))
    ]


async def grpc_predict(
    url: str, model: str, *images: bytes, top_k: int | None = None, timeout_s: float = 60
) -> list[Prediction]:
    """One request through KServe's InferenceGRPCClient, on a connection of its own."""
    with _argv_hidden():
        from kserve import InferenceGRPCClient

    client = InferenceGRPCClient(url, timeout=timeout_s)
    try:
        return infer_response_predictions(await client.infer(infer_request(model, *images, top_k=top_k)))
    finally:
        await client.close()
