"""`python -m predictor`: KServe's flags plus ours, config read once, passed into constructors.

Each config declares its own flags (`predictor.flags`); this module only groups them,
builds the configs from the parsed flags and starts one server or the `--workers` supervisor.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable

from kserve import logging as kserve_logging
from kserve import model_server

from .artifact import ArtifactError, fetch, read_spec
from .batching import BatchingConfig
from .engine import EngineConfig
from .limits import RequestLimits
from .model import ImageClassifier, ImageModel
from .ray.config import RayConfig
from .server import GrpcMessageLimits, PredictorServer, ServerConfig
from .tls import TLSConfig
from .workers import Supervisor, follow_supervisor, worker_command

logger = logging.getLogger("predictor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        parents=[model_server.parser], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model_dir", default="/mnt/models", help="Local model artifact directory")
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
    EngineConfig.add_flags(parser, "engine")
    BatchingConfig.add_flags(parser, "dynamic batching")
    RequestLimits.add_flags(parser, "request limits")
    RayConfig.add_flags(parser, "Ray Serve (needs the `ray` extra)")
    return parser


def _ray_model(ray_config: RayConfig) -> Callable[..., ImageModel]:
    try:
        from .ray.local import start_replicas
    except ImportError as e:
        raise ValueError(f"--ray_replicas needs the `ray` extra (pip install 'predictor[ray]'): {e}") from e
    return functools.partial(start_replicas, ray_config=ray_config)


def main(argv: list[str] | None = None) -> int:
    follow_supervisor()
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
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
    try:
        server_config = ServerConfig.from_args(args)
        limits = RequestLimits.from_args(args)
        tls = TLSConfig.from_args(args)
        # Checked here too, so that the --workers supervisor refuses before starting anything.
        GrpcMessageLimits.reconcile(server_config, limits)
        engine_config = EngineConfig.from_args(args)
        batching = BatchingConfig.from_args(args)
        if args.workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {args.workers}")
        ray_config = RayConfig.from_args(args)
        if ray_config.enabled and args.workers > 1:
            raise ValueError("--ray_replicas and --workers are alternatives: choose one")
        storage_uri = args.storage_uri or None  # the supervisor hands its workers ""
        if args.workers > 1:
            # Fetch once, here: N workers downloading into one directory would race.
            model_dir = str(fetch(storage_uri, args.model_dir))
            read_spec(model_dir)
            supervisor = Supervisor(
                worker_command(argv, model_dir), workers=args.workers, grace_period_s=server_config.grace_period_s
            )
        else:
            model_class = _ray_model(ray_config) if ray_config.enabled else ImageClassifier
            model = model_class(
                args.model_name,
                model_dir=args.model_dir,
                storage_uri=storage_uri,
                engine_config=engine_config,
                batching=batching,
                limits=limits,
            )
            model.load()
            server = PredictorServer(
                config=server_config,
                limits=limits,
                tls=tls,
                http_port=args.http_port,
                grpc_port=args.grpc_port,
                max_threads=args.max_threads,
                enable_grpc=args.enable_grpc,
                enable_docs_url=args.enable_docs_url,
                enable_latency_logging=args.enable_latency_logging,
            )
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


if __name__ == "__main__":
    sys.exit(main())
