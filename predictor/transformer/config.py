"""How the transformer reaches the predictor, checked once, here.

KServe's own transformer flags (`--predictor_host`, `--predictor_protocol`, `--predictor_use_ssl`,
`--predictor_request_timeout_seconds`, `--predictor_request_retries`,
`--enable_predictor_health_check`) are read as KServe declares them; the fields without a flag of
their own below take those. KServe's controller adds `--predictor_host <isvc>-predictor.<ns>`
without a port (CustomTransformer.GetContainer, kserve/kserve
pkg/apis/serving/v1beta1/transformer_custom.go) unless the container's args already name one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..flags import FlagConfig, flag

# The predictor's gRPC port: the runtime's second container port, which the Standard-mode Service
# keeps under its own number (createDefaultSvc, reconcilers/service/service_reconciler.go).
DEFAULT_PREDICTOR_GRPC_PORT = 8081
GRPC_V2 = "grpc-v2"


@dataclass(frozen=True)
class TransformerConfig(FlagConfig):
    # KServe's flags (model_server.parser).
    predictor_host: str | None = None
    predictor_protocol: str = GRPC_V2
    predictor_use_ssl: bool = False
    predictor_request_timeout_seconds: int = 600
    predictor_request_retries: int = 0
    enable_predictor_health_check: bool = False
    # Ours.
    predictor_model_name: str | None = flag(
        None, "The model's name on the predictor (default: --model_name, as KServe names both)", parse=str
    )
    predictor_channels: int = flag(
        2, "gRPC channels to the predictor, used in turn; each balances round_robin over every address of the host"
    )
    predictor_channel_max_age_s: float = flag(
        60.0, "Replace a channel this old, so a headless Service's new pods are found (0: never)"
    )
    decode_threads: int = flag(4, "CPU threads that decode, resize and crop images")

    def __post_init__(self) -> None:
        if not self.predictor_host:
            raise ValueError(
                "--predictor_host is required: the predictor's gRPC address, host or host:port "
                f"(port {DEFAULT_PREDICTOR_GRPC_PORT} when none is given)"
            )
        if self.predictor_protocol != GRPC_V2:
            raise ValueError(
                f"--predictor_protocol {self.predictor_protocol} is not supported: this transformer sends the "
                f"cropped pixels as raw UINT8 over gRPC; use --predictor_protocol {GRPC_V2} (the default)"
            )
        for name in ("predictor_channels", "decode_threads", "predictor_request_timeout_seconds"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.predictor_request_retries < 0:
            raise ValueError(f"predictor_request_retries must be >= 0, got {self.predictor_request_retries}")
        if not self.predictor_channel_max_age_s >= 0:
            raise ValueError(f"predictor_channel_max_age_s must be >= 0, got {self.predictor_channel_max_age_s}")

    @property
    def target(self) -> str:
        """The gRPC target: through the DNS resolver, so round_robin sees every address a headless
        Service returns (a ClusterIP Service returns one, and one channel stays on one pod)."""
        host = self.predictor_host or ""
        if "://" in host or host.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
            return host
        if host.startswith("[") or host.count(":") == 1:  # [v6]:port or name:port
            return f"dns:///{host}"
        if ":" in host:  # a bare IPv6 address
            return f"dns:///[{host}]:{DEFAULT_PREDICTOR_GRPC_PORT}"
        return f"dns:///{host}:{DEFAULT_PREDICTOR_GRPC_PORT}"


def check_workers(workers: int) -> None:
    """`--workers N` runs N whole transformer processes on shared ports, as it does for the predictor.
    KServe's controller adds `--workers <containerConcurrency>` when the transformer sets
    containerConcurrency and its args do not name --workers; that number is a concurrency cap, not
    a process count, so a count beyond the CPUs is refused rather than obeyed."""
    cpus = len(os.sched_getaffinity(0))
    if workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers}")
    if workers > cpus:
        raise ValueError(
            f"--workers {workers} asks for more processes than the {cpus} CPUs this container may use. "
            "KServe adds --workers <containerConcurrency> to a transformer's args when containerConcurrency is "
            "set and the args name no --workers: put --workers=1 (or one process per core) in the "
            "transformer container's args to keep containerConcurrency as a concurrency limit only"
        )
