"""`python -m predictor.transformer`: the transformer role on the predictor's hardened server.

KServe's flags (including its transformer flags), the server's, the coalescing batcher's, the
request limits and the hop's; config read once, passed into constructors.
"""

from __future__ import annotations

import argparse
import logging
import sys

from kserve import logging as kserve_logging
from kserve import model_server

from ..artifact import ArtifactError, fetch, read_spec
from ..batching import BatchingConfig
from ..limits import RequestLimits
from ..server import GrpcMessageLimits, PredictorServer, ServerConfig
from ..tls import TLSConfig
from ..workers import Supervisor, follow_supervisor, worker_command
from . import metrics
from .config import TransformerConfig, check_workers
from .model import ImageTransformer

logger = logging.getLogger("predictor")

MODULE = "predictor.transformer"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        parents=[model_server.parser],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--model_dir", default="/mnt/models", help="Artifact directory: model.json and the labels are read, not weights"
    )
    parser.add_argument("--storage_uri", default=None, help="Where to fetch the artifact from into --model_dir")
    ServerConfig.add_flags(parser)
    # Calls in flight: enough to keep every predictor pod behind the round_robin busy (the predictor's
    # own default, 2, would leave all but two pods idle); each call still coalesces what has queued.
    parser.set_defaults(enable_latency_logging=False, predictor_protocol="grpc-v2", max_concurrent_batches=8)
    # As for the predictor: unset, --max_body_bytes decides the gRPC message limits (GrpcMessageLimits).
    parser.set_defaults(grpc_max_receive_message_length=None, grpc_max_send_message_length=None)
    TransformerConfig.add_flags(parser, "predictor hop")
    BatchingConfig.add_flags(parser, "coalescing into predictor calls")
    RequestLimits.add_flags(parser, "request limits")
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    if args.configure_logging:
        kserve_logging.configure_logging(args.log_config_file)
        logger.handlers = list(kserve_logging.logger.handlers)
        logger.setLevel(kserve_logging.logger.level or logging.INFO)
        logger.propagate = False
    if not args.enable_latency_logging:
        kserve_logging.trace_logger.setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    follow_supervisor()
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    if any(a == "--protocol" or a.startswith("--protocol=") for a in argv):
        # KServe's samples still pass it; KServe 0.21 parses it and then reads only --predictor_protocol.
        logger.warning("--protocol is ignored: the predictor is reached as --predictor_protocol says (grpc-v2)")
    try:
        server_config = ServerConfig.from_args(args)
        limits = RequestLimits.from_args(args)
        tls = TLSConfig.from_args(args)
        GrpcMessageLimits.reconcile(server_config, limits)
        batching = BatchingConfig.from_args(args)
        config = TransformerConfig.from_args(args)
        check_workers(args.workers)
        storage_uri = args.storage_uri or None
        if args.workers > 1:
            model_dir = str(fetch(storage_uri, args.model_dir))
            read_spec(model_dir)
            supervisor = Supervisor(
                worker_command(argv, model_dir, MODULE),
                workers=args.workers,
                grace_period_s=server_config.grace_period_s,
            )
        else:
            metrics.unregister_predictor_metrics()
            model = ImageTransformer(
                args.model_name,
                model_dir=args.model_dir,
                storage_uri=storage_uri,
                config=config,
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
        logger.error("cannot start: %s", e)
        return 2
    if args.workers > 1:
        return supervisor.run()
    try:
        server.start([model])
    except OSError as e:
        logger.error("cannot start: %s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
