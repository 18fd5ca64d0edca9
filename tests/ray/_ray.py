"""Helpers for the Ray Serve tests: the local Serve application on free loopback ports, and
reading a front door's answers the same way for both."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from devtools.launcher import REPO, RunningServer, free_port
from predictor.ray.serve_config import localize

SERVE_CONFIG = REPO / "inferenceservices" / "ray" / "serve-config.yaml"


def start_serve_app(
    model_dir: Path, model_name: str, *, max_batch_size: int, ready_timeout_s: float = 300
) -> RunningServer:
    """The RayService's own Serve config, localized and run as `make serve-ray` runs it (`predictor.ray.run`)."""
    http_port, grpc_port = free_port(), free_port()
    config = localize(
        yaml.safe_load(SERVE_CONFIG.read_text()), model_dir=str(model_dir), http_port=http_port, grpc_port=grpc_port
    )
    args = config["applications"][0]["args"]
    args.update(model_name=model_name, max_batch_size=max_batch_size, max_latency_ms=20)
    directory = Path(tempfile.mkdtemp(prefix="serve-app-"))
    (directory / "serve-config.yaml").write_text(yaml.safe_dump(config))
    log = directory / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "predictor.ray.run", str(directory / "serve-config.yaml")],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    app = RunningServer(process, model_name, http_port, grpc_port, log)
    app.wait_ready(ready_timeout_s)
    return app


_STATS_CHILD = r"""
import json, sys, ray
from ray import serve
address, app_name, deployment, want = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ray.init(address=address, configure_logging=False, log_to_driver=False)
handle = serve.get_deployment_handle(deployment, app_name=app_name)
seen = {}
for _ in range(200):  # Serve picks replicas at random: a few calls reach each one
    stats = handle.stats.remote().result()
    seen[stats.replica_id] = stats.__dict__
    if len(seen) >= want:
        break
print(json.dumps(list(seen.values())))
"""


def ray_address(pid: int) -> str:
    """The GCS address of the Ray instance that process `pid` started (its session directory
    carries the starter's pid in its name)."""
    sessions = sorted(Path(tempfile.gettempdir(), "ray").glob(f"session_*_{pid}"))
    if not sessions:
        raise RuntimeError(f"no Ray session started by pid {pid}")
    (port_file,) = sessions[-1].glob("gcs_server_port_*")
    import ray.util

    return f"{ray.util.get_node_ip_address()}:{port_file.read_text().strip()}"


def replica_stats(pid: int, app_name: str, replicas: int) -> list[dict]:
    """Each classifier replica's batch counters, read through Serve from a separate driver."""
    from predictor.ray.config import CLASSIFIER_DEPLOYMENT

    done = subprocess.run(
        [sys.executable, "-c", _STATS_CHILD, ray_address(pid), app_name, CLASSIFIER_DEPLOYMENT, str(replicas)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        # Local instances require Ray's token (~/.ray/auth_token), which a client sends only in token mode.
        env={**os.environ, "RAY_AUTH_MODE": "token"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"stats child failed:\n{done.stderr[-3000:]}")
    import json

    return json.loads(done.stdout.strip().splitlines()[-1])
