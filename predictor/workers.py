"""`--workers N`: N whole predictor processes sharing the REST and gRPC ports.

One Python process spends 0.5-0.7 ms of CPU on each gRPC request before any model work and
uses about one core for it (the GIL): some 2,000 requests/s, far short of 10,000
(docs/BENCHMARKS.md). KServe's own
`--workers` forks only the REST server, with an app our hardening does not reach, and
keeps gRPC in one process; so each worker here is a complete `python -m predictor`
(its own model, batcher, REST and gRPC) in a fresh interpreter, which is CUDA-safe, and
the kernel spreads connections over them (SO_REUSEPORT).

The supervisor fetches the artifact once, starts the workers, restarts one that crashes,
gives up when they crash in a loop, and on SIGTERM lets every worker drain.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

SUPERVISOR_PID_ENV = "PREDICTOR_SUPERVISOR_PID"

# `python -m predictor` exits with this when its flags or artifact are bad: restarting
# the same command cannot help.
EXIT_BAD_CONFIG = 2


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5
    window_s: float = 60.0


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]


def worker_env(workers: int, metrics_dir: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """Each worker's environment: shared metrics directory, and the cores split between workers
    unless the operator already chose a thread count."""
    env = dict(os.environ if base is None else base)
    env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    env[SUPERVISOR_PID_ENV] = str(os.getpid())
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // workers))
    return env


class Supervisor:
    def __init__(
        self,
        command: Sequence[str],
        *,
        workers: int,
        grace_period_s: float,
        restart_policy: RestartPolicy = RestartPolicy(),
    ) -> None:
        if workers < 2:
            raise ValueError(f"the supervisor runs 2 or more workers, got {workers}")
        self.command = list(command)
        self.workers = workers
        self.grace_period_s = grace_period_s
        self.restart_policy = restart_policy
        self._stopping = False
        self._restarts: deque[float] = deque()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (exit 0 once all workers drained) or an unrecoverable worker failure."""
        metrics_dir = tempfile.mkdtemp(prefix="predictor-metrics-")
        env = worker_env(self.workers, metrics_dir)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        running = [self._spawn(i, env) for i in range(self.workers)]
        try:
            code = self._watch(running, env, metrics_dir)
        finally:
            clean = self._stop(running)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return code if code or clean else 1

    def _on_signal(self, signum: int, _frame: object) -> None:
        logger.info("supervisor: %s, draining %d workers", signal.Signals(signum).name, self.workers)
        self._stopping = True

    def _spawn(self, index: int, env: dict[str, str]) -> _Worker:
        process = subprocess.Popen(self.command, env=env)
        logger.info("supervisor: worker %d started (pid %d)", index, process.pid)
        return _Worker(index, process)

    def _watch(self, running: list[_Worker], env: dict[str, str], metrics_dir: str) -> int:
        while not self._stopping:
            time.sleep(0.2)
            for slot, worker in enumerate(running):
                code = worker.process.poll()
                if code is None or self._stopping:
                    continue
                _mark_dead(worker.process.pid, metrics_dir)
                if code == EXIT_BAD_CONFIG:
                    logger.error("supervisor: worker %d cannot start (exit %d); stopping", worker.index, code)
                    return code
                if not self._may_restart():
                    logger.error(
                        "supervisor: worker %d exited with %d after %d restarts within %.0f s; giving up",
                        worker.index,
                        code,
                        len(self._restarts),
                        self.restart_policy.window_s,
                    )
                    return 1
                logger.warning("supervisor: worker %d exited with %d; restarting it", worker.index, code)
                running[slot] = self._spawn(worker.index, env)
        return 0

    def _may_restart(self) -> bool:
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > self.restart_policy.window_s:
            self._restarts.popleft()
        if len(self._restarts) >= self.restart_policy.max_restarts:
            return False
        self._restarts.append(now)
        return True

    def _stop(self, running: list[_Worker]) -> bool:
        """SIGTERM every worker (each drains on its own), then wait; SIGKILL whatever outlives the
        grace period. True when every worker drained and exited 0."""
        for worker in running:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_period_s + 5
        for worker in running:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error("supervisor: worker %d did not drain in time; killing it", worker.index)
                worker.process.kill()
                worker.process.wait()
        return all(worker.process.returncode == 0 for worker in running)


def follow_supervisor() -> None:
    """Called first thing in a worker: SIGTERM (a drain) when the supervisor dies, even by
    SIGKILL, so no orphan keeps serving on the shared ports. (Set here rather than in a
    preexec_fn, which is unsafe in a process with threads.)"""
    supervisor_pid = os.environ.get(SUPERVISOR_PID_ENV)
    if supervisor_pid is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(supervisor_pid):  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def _mark_dead(pid: int, metrics_dir: str) -> None:
    # Drop the dead worker's live gauges (queue depth, in flight) from the pod's sums.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, metrics_dir)


def worker_command(argv: Sequence[str], model_dir: str, module: str = "predictor") -> list[str]:
    """The worker's command line: the same flags, and later ones that win (argparse keeps the last):
    one process, shared ports, and the artifact the supervisor already fetched. `module` is the
    role: `predictor` or `predictor.transformer`."""
    return [
        sys.executable,
        "-m",
        module,
        *argv,
        "--workers",
        "1",
        "--reuse_port",
        "--model_dir",
        model_dir,
        "--storage_uri",
        "",
    ]
