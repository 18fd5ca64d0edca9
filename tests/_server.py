"""Start the real predictor (`python -m predictor`) on free loopback ports and wait until ready."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    process: subprocess.Popen
    model_name: str
    http_port: int
    grpc_port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_still_serving(self) -> None:
        """The reference photo is still classified correctly: what every hostile test ends with."""
        from ._images import CAT_CLASSES, b64, jpeg

        r = httpx.post(
            f"{self.base_url}/v1/models/{self.model_name}:predict",
            json={"instances": [{"b64": b64(jpeg("chelsea"))}]},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert CAT_CLASSES & set(r.json()["predictions"][0]["class_names"][:3])

    def metrics(self) -> str:
        return httpx.get(f"{self.base_url}/metrics", timeout=10).text

    def stop(self, timeout_s: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def launch(
    model_dir: str | os.PathLike | None, *args: str, model_name: str = "classifier"
) -> tuple[subprocess.Popen, int, int, Path]:
    http_port, grpc_port = free_port(), free_port()
    log = Path(tempfile.mkstemp(prefix="predictor-", suffix=".log")[1])
    cmd = [
        sys.executable,
        "-m",
        "predictor",
        "--model_name",
        model_name,
        "--http_port",
        str(http_port),
        "--grpc_port",
        str(grpc_port),
        "--bind_address",
        "127.0.0.1",
        "--enable_latency_logging",
        "false",
        *(["--model_dir", str(model_dir)] if model_dir is not None else []),
        *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    return process, http_port, grpc_port, log


def start(
    model_dir: str | os.PathLike | None, *args: str, model_name: str = "classifier", ready_timeout_s: float = 180
) -> RunningServer:
    process, http_port, grpc_port, log = launch(model_dir, *args, model_name=model_name)
    server = RunningServer(process, model_name, http_port, grpc_port, log)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"predictor exited with {process.returncode} before ready:\n{server.log()[-4000:]}")
        try:
            r = httpx.get(f"{server.base_url}/v2/models/{model_name}/ready", timeout=2)
            if r.status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"predictor not ready after {ready_timeout_s} s:\n{server.log()[-4000:]}")
