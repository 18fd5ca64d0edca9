"""`python -m predictor.transformer`: the transformer role on the predictor's hardened server.

KServe's flags (including its transformer flags), the server's, the coalescing batcher's, the
request limits and the hop's; config read once, passed into constructors.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys

from .. import role
from ..batching import BatchingConfig
from . import metrics
from .config import TransformerConfig, check_workers
from .model import ImageTransformer

logger = logging.getLogger("predictor")

MODULE = "predictor.transformer"


def build_parser() -> argparse.ArgumentParser:
    parser = role.parser(
        f"python -m {MODULE}",
        __doc__.split("\n\n")[0],
        model_dir_help="Artifact directory: model.json and the labels are read, not weights",
    )
    # Calls in flight: enough to keep every predictor pod behind the round_robin busy (the predictor's
    # own default, 2, would leave all but two pods idle); each call still coalesces what has queued.
    parser.set_defaults(predictor_protocol="grpc-v2", max_concurrent_batches=8)
    # None tells a --protocol the caller gave from KServe's default.
    parser.set_defaults(protocol=None)
    TransformerConfig.add_flags(parser, "predictor hop")
    BatchingConfig.add_flags(parser, "coalescing into predictor calls")
    return parser


def _prepare(args: argparse.Namespace) -> role.ModelFactory:
    batching = BatchingConfig.from_args(args)
    config = TransformerConfig.from_args(args)
    check_workers(args.workers)
    if args.protocol is not None:
        # KServe's samples still pass it; KServe 0.21 parses it and then reads only --predictor_protocol.
        logger.warning("--protocol is ignored: the predictor is reached as --predictor_protocol says (grpc-v2)")

    # A transformer pod's predictor_* series would read as zeros: only its own are served.
    metrics.unregister_predictor_metrics()
    return functools.partial(ImageTransformer, config=config, batching=batching)


def main(argv: list[str] | None = None) -> int:
    return role.main(argv, build_parser(), module=MODULE, prepare=_prepare)


if __name__ == "__main__":
    sys.exit(main())
