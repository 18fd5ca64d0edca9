"""`python -m predictor.ray.run CONFIG`: a Serve config file (Serve's multi-application format, such as the one
`make serve-ray` writes) served on a Ray instance of this process's own until SIGTERM or Ctrl-C.

It deploys the config as `serve run CONFIG` does (the same command, run in this process), and stops like the
project's server does: on SIGTERM or SIGINT every application is deleted, which Serve does gracefully (each
replica takes no new request and answers those it holds, within its graceful_shutdown_timeout_s) while the
proxies stay up to carry the answers back; then Serve and Ray stop and the process exits 0. `serve run` alone
stops only on Ctrl-C, and then shuts the proxies down with the replicas, dropping what is in flight.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import ray
import yaml
from ray import serve
from ray.serve.schema import ApplicationStatus, ServeDeploySchema
from ray.serve.scripts import cli as serve_cli

logger = logging.getLogger("predictor.ray.run")

_FAILED = (ApplicationStatus.DEPLOY_FAILED, ApplicationStatus.UNHEALTHY)


class DeployError(RuntimeError):
    """An application of the config did not start."""


def deploy(config_path: Path) -> list[str]:
    """Start Ray and Serve and submit the config, as `serve run --non-blocking CONFIG` does; return the names of
    its applications. Raises ValueError for a config that is not a valid Serve config."""
    config = ServeDeploySchema.model_validate(yaml.safe_load(config_path.read_text()))
    # "local": a Ray instance of this process's own, which ends with it.
    serve_cli.main(
        ["run", "--address", "local", "--non-blocking", str(config_path)], prog_name="serve", standalone_mode=False
    )
    return [app.name for app in config.applications]


def wait_running(names: list[str], stop: threading.Event, timeout_s: float) -> None:
    """Block until every application is RUNNING. Raises DeployError when one fails or the time is up."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        statuses = serve.status().applications
        failed = {n: statuses[n].message for n in names if n in statuses and statuses[n].status in _FAILED}
        if failed:
            raise DeployError(f"the Serve applications did not start: {failed}")
        if all(n in statuses and statuses[n].status == ApplicationStatus.RUNNING for n in names):
            return
        if time.monotonic() > deadline:
            raise DeployError(f"the Serve applications are not running after {timeout_s:g} s: {statuses}")
        stop.wait(1)


def drain(names: list[str]) -> None:
    """Delete the applications (Serve's replicas answer what they hold first), then stop Serve and Ray."""
    for name in names:
        logger.info("draining Serve application %s", name)
        serve.delete(name)
    serve.shutdown()  # type: ignore[no-untyped-call]  # Ray Serve does not annotate it
    ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m predictor.ray.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="Serve config file (YAML)")
    parser.add_argument(
        "--ready_timeout_s", type=float, default=600, help="how long the applications may take to start"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("%s: draining", signal.Signals(signum).name)
        stop.set()

    try:
        names = deploy(args.config)
    except ValueError as e:  # pydantic's ValidationError is one
        print(f"{args.config}: not a valid Serve config: {e}", file=sys.stderr)
        return 2
    # After ray.init, whose own SIGTERM handler exits at once (until here a signal stops the start). A process
    # started in the background inherits SIGINT ignored; this restores Ctrl-C too.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        wait_running(names, stop, args.ready_timeout_s)
        if not stop.is_set():
            logger.info("Serve applications running: %s; SIGTERM or Ctrl-C drains and stops", ", ".join(names))
            stop.wait()
    except DeployError as e:
        logger.error("%s", e)
        drain(names)
        return 1
    drain(names)
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
