"""What every role's `python -m` shares: KServe's parser and logging, the configs every server
takes, one server or the `--workers` supervisor, and a start that fails with one line and exit 2.

The roles (`predictor`, `predictor.transformer`, `predictor.combiner`) differ only in their own
flags and in the `Model` they serve; each hands `run` a function that builds that model.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

import kserve
from kserve import logging as kserve_logging
from kserve import model_server

from .artifact import ArtifactError, fetch, read_spec
from .grpc_server import GrpcMessageLimits
from .limits import RequestLimits
from .server import PredictorServer, ServerConfig
from .tls import TLSConfig
from .workers import Supervisor, follow_supervisor, worker_command

logger = logging.getLogger("predictor")


def parser(prog: str, description: str, *, model_dir_help: str | None = None) -> argparse.ArgumentParser:
    """KServe's flags, the server's and the request limits'; with `model_dir_help`, the artifact's too."""
    parser = argparse.ArgumentParser(
        prog=prog,
        parents=[model_server.parser],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=description,
    )
    if model_dir_help is not None:
        parser.add_argument("--model_dir", default="/mnt/models", help=model_dir_help)
        parser.add_argument(
            "--storage_uri",
            default=None,
            help="Where to fetch the artifact from (local path, file://, s3://, gs://, http(s)://) into --model_dir",
        )
    ServerConfig.add_flags(parser)
    # KServe logs a line per request by default: about 7 % of the event loop's time in a
    # gRPC profile. The latency histograms on /metrics carry the same figures.
    parser.set_defaults(enable_latency_logging=False)
    # KServe's gRPC message limits default to 8 MiB; unset, --max_body_bytes decides (GrpcMessageLimits).
    parser.set_defaults(grpc_max_receive_message_length=None, grpc_max_send_message_length=None)
    RequestLimits.add_flags(parser, "request limits")
    return parser


def configure_logging(args: argparse.Namespace) -> None:
    if args.configure_logging:
        kserve_logging.configure_logging(args.log_config_file)
        # Our modules log under "predictor"; give them KServe's handlers and format.
        logger.handlers = list(kserve_logging.logger.handlers)
        logger.setLevel(kserve_logging.logger.level or logging.INFO)
        logger.propagate = False
    if not args.enable_latency_logging:
        # KServe's REST timing middleware logs two lines per request to this logger whatever
        # the flag says; the flag is the operator's word on per-request latency lines.
        kserve_logging.trace_logger.setLevel(logging.WARNING)


# KServe's own server flags that PredictorServer takes, as ModelServer does, under their flag names.
_KSERVE_SERVER_FLAGS = (
    "http_port",
    "grpc_port",
    "max_threads",
    "enable_grpc",
    "enable_docs_url",
    "enable_latency_logging",
)


@dataclass(frozen=True)
class Serving:
    """The configs every role's server takes, read once from the flags and checked together."""

    server: ServerConfig
    limits: RequestLimits
    tls: TLSConfig

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Serving:
        server = ServerConfig.from_args(args)
        limits = RequestLimits.from_args(args)
        tls = TLSConfig.from_args(args)
        # Checked here too, so that the --workers supervisor refuses before starting anything.
        GrpcMessageLimits.reconcile(server, limits)
        return cls(server, limits, tls)

    def build_server(self, args: argparse.Namespace) -> PredictorServer:
        kserve_flags = {name: getattr(args, name) for name in _KSERVE_SERVER_FLAGS}
        return PredictorServer(config=self.server, limits=self.limits, tls=self.tls, **kserve_flags)


# Builds the role's model: called as `factory(model_name, model_dir=..., storage_uri=..., limits=...)`.
ModelFactory = Callable[..., kserve.Model]
# Reads the role's own flags (raising ValueError on a bad one) and returns its model factory; called
# before any supervisor starts, so a bad flag stops the pod at once.
Prepare = Callable[[argparse.Namespace], ModelFactory]


def main(argv: list[str] | None, parser: argparse.ArgumentParser, *, module: str, prepare: Prepare) -> int:
    """A role's `python -m`: parse, configure logging, then `run`."""
    follow_supervisor()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    configure_logging(args)
    return run(args, argv, module=module, prepare=prepare)


def run(args: argparse.Namespace, argv: list[str], *, module: str, prepare: Prepare) -> int:
    """Serve the role's model in this process, or supervise `--workers` copies of `module`."""
    try:
        serving = Serving.from_args(args)
        build_model = prepare(args)
        if args.workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {args.workers}")
        storage_uri = getattr(args, "storage_uri", None) or None  # the supervisor hands its workers ""
        if args.workers > 1:
            # Fetch once, here: N workers downloading into one directory would race.
            model_dir = str(fetch(storage_uri, args.model_dir))
            read_spec(model_dir)
            supervisor = Supervisor(
                worker_command(argv, model_dir, module),
                workers=args.workers,
                grace_period_s=serving.server.grace_period_s,
            )
        else:
            model = build_model(
                args.model_name,
                model_dir=getattr(args, "model_dir", None),
                storage_uri=storage_uri,
                limits=serving.limits,
            )
            model.load()
            server = serving.build_server(args)
    except (ArtifactError, ValueError) as e:
        # A bad artifact or flag must stop the pod before it is ever reported ready.
        logger.error("cannot start: %s", e)
        return 2
    if args.workers > 1:
        return supervisor.run()
    try:
        server.start([model])
    except OSError as e:  # a port that cannot be bound
        logger.error("cannot start: %s", e)
        return 2
    return 0
