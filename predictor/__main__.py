"""`python -m predictor`: KServe's flags plus ours, config read once, passed into constructors."""

from __future__ import annotations

import argparse
import functools
import logging
import sys

from kserve import logging as kserve_logging
from kserve import model_server

from .artifact import ArtifactError, fetch, read_spec
from .engine import DEVICES, PRECISIONS, EngineConfig
from .limits import RequestLimits
from .model import BatchingConfig, ImageClassifier
from .ray.config import RayConfig
from .server import PredictorServer
from .workers import Supervisor, follow_supervisor, worker_command

logger = logging.getLogger("predictor")


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


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
    parser.add_argument("--bind_address", default="0.0.0.0", help="Address the REST and gRPC servers listen on")
    parser.add_argument("--grace_period_s", type=int, default=20, help="SIGTERM drain limit (below Kubernetes' 30 s)")
    # Set by the --workers supervisor on its workers' command lines: bind the shared ports.
    parser.add_argument("--reuse_port", action="store_true", help=argparse.SUPPRESS)
    # KServe logs a line per request by default: about 7 % of the event loop's time in a
    # gRPC profile. The latency histograms on /metrics carry the same figures.
    parser.set_defaults(enable_latency_logging=False)
    engine = parser.add_argument_group("engine")
    engine.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda when available")
    engine.add_argument("--precision", choices=PRECISIONS, default=None, help="default: bf16 on GPU, fp32 on CPU")
    engine.add_argument("--compile", action="store_true", help="torch.compile + CUDA graphs per batch bucket")
    engine.add_argument(
        "--batch_buckets",
        type=_int_tuple,
        default=None,
        help="With --compile: the batch sizes captured, e.g. 1,8,64,256 "
        "(default: powers of two up to --max_batch_size)",
    )
    engine.add_argument("--no_channels_last", dest="channels_last", action="store_false")
    engine.add_argument("--decode_threads", type=int, default=4, help="CPU image-decoding threads")
    batching = parser.add_argument_group("dynamic batching")
    batching.add_argument("--max_batch_size", type=int, default=32, help="Images per device batch")
    batching.add_argument(
        "--max_latency_ms", type=float, default=5.0, help="Longest the first image waits for companions"
    )
    batching.add_argument(
        "--max_queue_size", type=int, default=1024, help="Images waiting; beyond it: 503 + Retry-After"
    )
    batching.add_argument("--request_timeout_ms", type=float, default=10_000.0, help="Queued longer than this: 504")
    batching.add_argument(
        "--max_concurrent_batches", type=int, default=2, help="Batches in flight (prepare overlaps inference)"
    )
    limits = parser.add_argument_group("request limits")
    defaults = RequestLimits()
    limits.add_argument("--max_body_bytes", type=int, default=defaults.max_body_bytes)
    limits.add_argument("--max_images_per_request", type=int, default=defaults.max_images_per_request)
    limits.add_argument("--max_image_pixels", type=int, default=defaults.max_image_pixels)
    limits.add_argument("--max_aspect_ratio", type=float, default=defaults.max_aspect_ratio)
    limits.add_argument("--max_tensor_elements", type=int, default=defaults.max_tensor_elements)
    RayConfig.add_arguments(parser)
    return parser


def _ray_model(ray_config: RayConfig):
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
        limits = RequestLimits(
            max_body_bytes=args.max_body_bytes,
            max_images_per_request=args.max_images_per_request,
            max_image_pixels=args.max_image_pixels,
            max_aspect_ratio=args.max_aspect_ratio,
            max_tensor_elements=args.max_tensor_elements,
        )
        engine_config = EngineConfig(
            device=args.device,
            precision=args.precision,
            channels_last=args.channels_last,
            compile=args.compile,
            max_batch_size=args.max_batch_size,
            decode_threads=args.decode_threads,
            batch_buckets=args.batch_buckets,
        )
        batching = BatchingConfig(
            max_batch_size=args.max_batch_size,
            max_latency_ms=args.max_latency_ms,
            max_queue_size=args.max_queue_size,
            request_timeout_ms=args.request_timeout_ms,
            max_concurrent_batches=args.max_concurrent_batches,
        )
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
                worker_command(argv, model_dir), workers=args.workers, grace_period_s=args.grace_period_s
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
                http_port=args.http_port,
                grpc_port=args.grpc_port,
                max_threads=args.max_threads,
                enable_grpc=args.enable_grpc,
                enable_docs_url=args.enable_docs_url,
                enable_latency_logging=args.enable_latency_logging,
                grace_period=args.grace_period_s,
                bind_address=args.bind_address,
                reuse_port=args.reuse_port,
                limits=limits,
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
