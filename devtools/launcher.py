"""Start the real predictor (`python -m predictor`) on free loopback ports and wait until it is ready."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import psutil

from . import metrics, payloads
from .photos import CAT_CLASSES, jpeg

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 180.0
# Two intra-op threads unless told: a test server shares a small machine with its clients.
TEST_THREADS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return cast(int, s.getsockname()[1])  # (host, port) for AF_INET


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    model_name: str
    http_port: int
    grpc_port: int
    log_path: Path
    # A server started with TLS: the CA (PEM) that its certificate chains to.
    ca_file: str | None = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def v1_url(self) -> str:
        return self.base_url + payloads.v1_path(self.model_name)

    @property
    def v2_url(self) -> str:
        return self.base_url + payloads.v2_path(self.model_name)

    def verify(self) -> ssl.SSLContext | bool:
        """What an httpx client passes as `verify` to trust this server."""
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post_v1(self, body: Any, headers: dict[str, str] | None = None, timeout_s: float = 60) -> httpx.Response:
        """A v1 :predict; `body` is sent as JSON unless it is bytes (sent as they are)."""
        return _post(self.v1_url, body, headers, timeout_s)

    def post_v2(self, body: Any, headers: dict[str, str] | None = None, timeout_s: float = 60) -> httpx.Response:
        """A v2 /infer; `body` is sent as JSON unless it is bytes (a binary body, sent with its `headers`)."""
        return _post(self.v2_url, body, headers, timeout_s)

    def assert_still_serving(self) -> None:
        """The reference photo is still classified correctly: what every hostile test ends with."""
        r = self.post_v1(payloads.v1_body(jpeg("chelsea"), bare=True))
        assert r.status_code == 200, r.text
        assert CAT_CLASSES & set(r.json()["predictions"][0]["class_names"][:3])

    def metrics(self) -> metrics.Metrics:
        return metrics.scrape(self.base_url)

    async def until_inflight(
        self, client: httpx.AsyncClient, count: int, timeout_s: float = 20, gauge: str = "predictor_inflight_requests"
    ) -> None:
        """Until the server holds `count` requests in flight (its own `gauge`), or timeout_s passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            held = await metrics.scrape_async(client, self.base_url)
            if held is not None and held.get(gauge, 0) >= count:
                return
            await asyncio.sleep(0.02)

    def cpu_s(self) -> float | None:
        """CPU seconds used so far by the server and, under --workers, by its workers."""
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.process.pid)
            total = 0.0
            for process in (root, *root.children(recursive=True)):
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system
            return total
        return None

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until the model answers ready; raises with the log's tail if the process exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        url = f"{self.base_url}/v2/models/{self.model_name}/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode} before ready:\n{self.log()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2, verify=self.verify()).status_code == 200:
                    return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout_s:.0f} s:\n{self.log()[-4000:]}")

    def wait_exit(self, timeout_s: float = 120) -> int:
        """The exit status of a server expected to stop by itself; killed if it has not after timeout_s."""
        try:
            return self.process.wait(timeout_s)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM (the server drains), SIGKILL after timeout_s; the exit status."""
        return terminate(self.process, timeout_s)


def terminate(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """What Kubernetes does to a pod: SIGTERM, SIGKILL once the grace period is over; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _post(url: str, body: Any, headers: dict[str, str] | None, timeout_s: float) -> httpx.Response:
    content = body if isinstance(body, bytes) else payloads.to_json(body)
    return httpx.post(url, content=content, headers=headers or {"content-type": "application/json"}, timeout=timeout_s)


def launch(
    model_dir: str | os.PathLike[str] | None,
    *args: str,
    model_name: str = "classifier",
    log_path: Path | None = None,
    threads: int | None = TEST_THREADS,
    module: str = "predictor",
    env: dict[str, str] | None = None,
    http_port: int | None = None,
    grpc_port: int | None = None,
    ca_file: str | None = None,
) -> RunningServer:
    """Start the server and return at once (see `RunningServer.wait_ready`), on free ports unless given.

    `args` are more flags; `threads` sets OMP_NUM_THREADS unless the environment already
    does (None: torch's default, every core, as a benchmark wants); `module` is the role
    (`predictor`, `predictor.transformer`, `predictor.combiner`); `env` adds to the environment.
    `http_port`: where REST will listen when `args` decide it (a later --http_port wins); `ca_file`:
    the server speaks TLS, with a certificate this CA signed."""
    http_port, grpc_port = http_port or free_port(), grpc_port or free_port()
    if log_path is None:
        log_path = Path(tempfile.mkstemp(prefix=f"{module.replace('.', '-')}-", suffix=".log")[1])
    cmd = [
        sys.executable,
        "-m",
        module,
        "--model_name",
        model_name,
        "--http_port",
        str(http_port),
        "--grpc_port",
        str(grpc_port),
        "--bind_address",
        "127.0.0.1",
        # A log line per request is CPU the server would spend on logging, not serving.
        "--enable_latency_logging",
        "false",
        *(["--model_dir", str(model_dir)] if model_dir is not None else []),
        *args,
    ]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if threads is not None:
        environment.setdefault("OMP_NUM_THREADS", str(threads))
    with open(log_path, "wb") as out:
        process = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=environment)
    return RunningServer(process, model_name, http_port, grpc_port, log_path, ca_file)


def start(
    model_dir: str | os.PathLike[str] | None,
    *args: str,
    model_name: str = "classifier",
    ready_timeout_s: float = READY_TIMEOUT_S,
    log_path: Path | None = None,
    threads: int | None = TEST_THREADS,
    **options: Any,
) -> RunningServer:
    """`launch` (`options` are its keyword arguments), then wait until the model is ready."""
    server = launch(model_dir, *args, model_name=model_name, log_path=log_path, threads=threads, **options)
    server.wait_ready(ready_timeout_s)
    return server


def start_transformer(
    model_dir: str | os.PathLike[str] | None, predictor: RunningServer, *args: str, **kwargs: Any
) -> RunningServer:
    """`python -m predictor.transformer` in front of `predictor` (over its gRPC port), under the same model name."""
    kwargs.setdefault("model_name", predictor.model_name)
    return start(model_dir, "--predictor_host", predictor.grpc_url, *args, module="predictor.transformer", **kwargs)
