"""KServe's `GRPCInferenceService` on Ray Serve's gRPC proxy.

Serve's proxy pickles each request message and unpickles it in the ingress replica. KServe's
generated classes name their module `grpc_predict_v2_pb2` (the protoc output's own name, not
its place in the kserve package), so unpickling fails unless that name resolves: importing this
module makes it resolve. It is the `grpc_servicer_functions` entry of the Serve config, which
imports it in the proxy, and the ingress imports it in the replicas.
"""

from __future__ import annotations

import sys
from typing import Any

from kserve.protocol.grpc import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc

sys.modules.setdefault(grpc_predict_v2_pb2.ModelInferRequest.__module__, grpc_predict_v2_pb2)

# The import path to list in `grpc_options.grpc_servicer_functions`.
SERVICER_FUNCTION = f"{__name__}.add_inference_servicer"


def add_inference_servicer(servicer: Any, server: Any) -> None:
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
