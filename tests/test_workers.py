"""`--workers N`: N whole predictors behind one REST port and one gRPC port, supervised.

Every worker listens on both ports and the kernel spreads connections over them, so each
request below opens its own connection: over a handful of them, both workers serve.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from devtools import launcher
from devtools.artifacts import make_small_artifact
from devtools.launcher import RunningServer
from devtools.payloads import grpc_predict, v1_body, v2_body
from devtools.photos import CAT_CLASSES, jpeg
from predictor.__main__ import build_parser
from predictor.sockets import bind_reuse_port
from predictor.workers import RestartPolicy, Supervisor, worker_command, worker_env

WORKERS = 2


@pytest.fixture(scope="module")
def two_workers(default_model_dir):
    running = launcher.start(default_model_dir, "--workers", str(WORKERS), "--max_batch_size", "8")
    yield running
    assert running.stop() == 0, running.log()[-3000:]


def _workers(server: RunningServer) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children()


def _listening_ports(process: psutil.Process) -> set[int]:
    connections = getattr(process, "net_connections", None) or process.connections  # psutil < 6
    return {c.laddr.port for c in connections("tcp") if c.status == psutil.CONN_LISTEN}


def _wait_for_workers(server: RunningServer, timeout_s: float = 180) -> list[psutil.Process]:
    """Until WORKERS children listen on both ports (a worker binds only once its model is ready)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers = _workers(server)
        with_ports = [w for w in workers if {server.http_port, server.grpc_port} <= _listening_ports(w)]
        if len(with_ports) == WORKERS:
            return with_ports
        time.sleep(0.25)
    raise AssertionError(f"not {WORKERS} listening workers after {timeout_s} s:\n{server.log()[-3000:]}")


def _v1_top3(server: RunningServer) -> list[str]:
    # A client per request: a new connection, which the kernel may hand to any worker.
    r = server.post_v1(v1_body(jpeg("chelsea"), bare=True))
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]["class_names"][:3]


def _ok_count(server: RunningServer) -> float:
    return server.metrics().get("predictor_requests_total", 0.0, status="ok")


# ----------------------------------------------------------------------------- serving


def test_every_worker_is_a_whole_server_listening_on_both_ports(two_workers):
    workers = _wait_for_workers(two_workers)
    assert len({w.pid for w in workers}) == WORKERS
    assert all("--reuse_port" in w.cmdline() for w in workers)


def test_v1_v2_rest_and_grpc_are_answered_over_many_connections(two_workers):
    for _ in range(4):
        assert CAT_CLASSES & set(_v1_top3(two_workers))
        r = two_workers.post_v2(v2_body(jpeg("chelsea")) | {"parameters": {"binary_data_output": False}})
        assert r.status_code == 200, r.text
    for _ in range(4):  # a connection per request here too
        predictions = asyncio.run(grpc_predict(two_workers.grpc_url, two_workers.model_name, jpeg("chelsea")))
        assert CAT_CLASSES & set(predictions[0]["class_names"][:3])


def test_metrics_scraped_from_any_worker_count_the_requests_of_all(two_workers):
    before = _ok_count(two_workers)
    for _ in range(8):
        _v1_top3(two_workers)
    # Each scrape is a new connection too; every one must see all 8, not its worker's share.
    for _ in range(6):
        assert _ok_count(two_workers) == before + 8


def test_a_crashed_worker_is_replaced_while_the_other_keeps_serving(two_workers):
    victim = _wait_for_workers(two_workers)[0]
    victim.kill()
    victim.wait(10)
    for _ in range(6):  # the survivor alone holds the ports until the replacement binds
        assert CAT_CLASSES & set(_v1_top3(two_workers))
    replacements = _wait_for_workers(two_workers)
    assert victim.pid not in {w.pid for w in replacements}
    assert "exited with -9; restarting it" in two_workers.log()
    two_workers.assert_still_serving()


# ----------------------------------------------------------------------------- start and stop


def test_sigterm_drains_every_worker_answers_all_in_flight_and_exits_0(tmp_path):
    make_small_artifact(tmp_path / "small")
    running = launcher.start(tmp_path / "small", "--workers", str(WORKERS), "--max_latency_ms", "20")
    workers = _wait_for_workers(running)
    url = running.v1_url
    body = v1_body(jpeg("chelsea"), bare=True)

    async def scenario() -> list[object]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=40)) as client:
            tasks = [asyncio.create_task(client.post(url, json=body)) for _ in range(40)]
            await running.until_inflight(client, 10)
            running.process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks, return_exceptions=True)

    responses = asyncio.run(scenario())
    codes = [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in responses]
    assert codes == [200] * 40, codes
    assert running.process.wait(timeout=40) == 0, running.log()[-3000:]
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    assert running.log().count("drained") == WORKERS


def test_workers_do_not_outlive_a_killed_supervisor(tmp_path):
    make_small_artifact(tmp_path / "small")
    running = launcher.start(tmp_path / "small", "--workers", str(WORKERS))
    workers = _wait_for_workers(running)
    running.process.kill()  # SIGKILL: no chance to stop them itself
    running.process.wait(10)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, [w.pid for w in alive]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{running.base_url}/v2/health/ready", timeout=2)


def test_an_artifact_that_fails_to_load_in_the_workers_stops_the_supervisor_with_exit_2(default_model_dir, tmp_path):
    artifact = tmp_path / "broken"
    shutil.copytree(default_model_dir, artifact)
    weights = artifact / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    spec = json.loads((artifact / "model.json").read_text())
    spec.pop("sha256")  # model.json stays valid: the supervisor's check passes, the workers' load fails
    (artifact / "model.json").write_text(json.dumps(spec))
    broken = launcher.launch(artifact, "--workers", str(WORKERS))
    assert broken.wait_exit() == 2, broken.log()[-3000:]
    assert "model.safetensors" in broken.log() and "cannot start (exit 2)" in broken.log()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{broken.base_url}/v2/health/ready", timeout=2)


def test_an_artifact_from_a_storage_uri_is_fetched_once_by_the_supervisor(default_model_dir, tmp_path):
    running = launcher.start(
        None,
        "--workers",
        str(WORKERS),
        "--storage_uri",
        f"file://{default_model_dir}",
        "--model_dir",
        str(tmp_path / "mnt"),
    )
    try:
        _wait_for_workers(running)
        for worker in _workers(running):
            args = build_parser().parse_args(worker.cmdline()[3:])
            assert args.storage_uri == "" and args.model_dir == str(default_model_dir)
        running.assert_still_serving()
    finally:
        assert running.stop() == 0


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_fewer_than_one_worker_is_refused_with_the_rule(default_model_dir, workers):
    refused = launcher.launch(default_model_dir, "--workers", workers)
    assert refused.wait_exit() == 2
    assert "workers must be an integer >= 1" in refused.log()


def test_a_single_server_refuses_a_grpc_port_that_is_taken_in_one_line(tmp_path):
    make_small_artifact(tmp_path / "small")
    first = launcher.start(tmp_path / "small")
    try:
        second = launcher.launch(tmp_path / "small", "--grpc_port", str(first.grpc_port))
        assert second.wait_exit() == 2
        text = second.log()
        assert f"cannot start: gRPC cannot listen on 127.0.0.1:{first.grpc_port}: Address already in use" in text
        assert "Traceback" not in text
        r = httpx.get(f"{first.base_url}/v2/models/{first.model_name}/ready", timeout=10)
        assert r.status_code == 200
    finally:
        first.stop()


def test_the_shared_port_socket_hands_out_connections_with_nagle_off():
    listener = bind_reuse_port("127.0.0.1", 0)
    listener.setblocking(True)
    try:
        with socket.create_connection(listener.getsockname()[:2]):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        with socket.socket() as other:  # and another process of this user may bind the port too
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            other.bind(listener.getsockname()[:2])
    finally:
        listener.close()


# ----------------------------------------------------------------------------- the supervisor alone


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_worker_exiting_with_the_bad_config_code_stops_the_supervisor_at_once():
    supervisor = Supervisor(_python("import sys; sys.exit(2)"), workers=2, grace_period_s=5)
    started = time.monotonic()
    assert supervisor.run() == 2
    assert time.monotonic() - started < 10


def test_workers_that_crash_in_a_loop_make_the_supervisor_give_up_with_exit_1(caplog):
    policy = RestartPolicy(max_restarts=3, window_s=60)
    supervisor = Supervisor(_python("import sys; sys.exit(3)"), workers=2, grace_period_s=5, restart_policy=policy)
    with caplog.at_level("INFO", logger="predictor.workers"):
        assert supervisor.run() == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum("restarting it" in m for m in messages) == 3
    assert "giving up" in messages[-1]


def test_the_supervisor_needs_at_least_two_workers():
    with pytest.raises(ValueError, match="2 or more workers"):
        Supervisor(_python("pass"), workers=1, grace_period_s=5)


def test_workers_split_the_cores_unless_the_operator_chose_a_thread_count(tmp_path):
    env = worker_env(2, str(tmp_path), base={})
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
    assert env["PREDICTOR_SUPERVISOR_PID"] == str(os.getpid())
    assert int(env["OMP_NUM_THREADS"]) == max(1, len(psutil.Process().cpu_affinity()) // 2)
    assert worker_env(2, str(tmp_path), base={"OMP_NUM_THREADS": "7"})["OMP_NUM_THREADS"] == "7"


def test_a_worker_command_line_keeps_every_flag_and_overrides_the_supervisor_ones():
    command = worker_command(
        ["--workers", "4", "--max_batch_size", "64", "--storage_uri", "s3://bucket/m"], "/mnt/fetched"
    )
    args = build_parser().parse_args(command[3:])
    assert (args.workers, args.reuse_port, args.max_batch_size) == (1, True, 64)
    assert (args.storage_uri, args.model_dir) == ("", "/mnt/fetched")
    assert Path(command[0]).name.startswith("python")
