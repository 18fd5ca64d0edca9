"""Start-up: every artifact format serves the same answers; a bad artifact or storage URI
stops the process with a message naming the file and the expectation, and it is never ready."""

from __future__ import annotations

import functools
import http.server
import json
import os
import pickle
import shutil
import tarfile
import threading
from pathlib import Path

import httpx
import pytest

from devtools import launcher
from devtools.artifacts import export, make_small_artifact
from devtools.payloads import b64
from devtools.photos import jpeg


def _top5(server, image: str) -> list[str]:
    r = httpx.post(
        f"{server.base_url}/v1/models/{server.model_name}:predict",
        json={"instances": [{"b64": b64(jpeg(image))}]},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]["class_names"]


@pytest.mark.parametrize("fmt", ["torchscript", "state_dict"])
def test_each_artifact_format_serves_the_same_top_k_as_safetensors(server, tmp_path, fmt):
    export(tmp_path, arch="efficientnet-lite0", fmt=fmt)
    other = launcher.start(tmp_path)
    try:
        for image in ("chelsea", "coffee"):
            assert _top5(other, image) == _top5(server, image)
    finally:
        assert other.stop() == 0


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_an_artifact_from_an_http_storage_uri_loads_through_kserves_downloader(
    server, default_model_dir, http_root, tmp_path
):
    root, base_url = http_root
    with tarfile.open(root / "model.tar.gz", "w:gz") as tar:
        for f in sorted(Path(default_model_dir).iterdir()):
            tar.add(f, arcname=f.name)
    target = tmp_path / "mnt-models"
    fetched = launcher.start(target, "--storage_uri", f"{base_url}/model.tar.gz")
    try:
        assert _top5(fetched, "chelsea") == _top5(server, "chelsea")
        assert (target / "model.json").exists()
    finally:
        fetched.stop()


def _copy(default_model_dir, tmp_path) -> Path:
    out = tmp_path / "artifact"
    shutil.copytree(default_model_dir, out)
    return out


def _expect_start_failure(model_dir, *args: str, fragments: tuple[str, ...]) -> str:
    failed = launcher.launch(model_dir, *args)
    returncode = failed.wait_exit(timeout_s=180)
    text = failed.log()
    assert returncode != 0, text[-3000:]
    for fragment in fragments:
        assert fragment in text, text[-3000:]
    with pytest.raises(httpx.TransportError):  # never served, never ready
        httpx.get(f"{failed.base_url}/v2/health/ready", timeout=2)
    return text


def test_a_missing_model_directory_fails_the_start(tmp_path):
    _expect_start_failure(tmp_path / "nope", fragments=("model.json",))


def test_missing_weights_fail_the_start(default_model_dir, tmp_path):
    artifact = _copy(default_model_dir, tmp_path)
    (artifact / "model.safetensors").unlink()
    _expect_start_failure(artifact, fragments=("model.safetensors",))


def test_corrupt_weights_fail_the_start(default_model_dir, tmp_path):
    artifact = _copy(default_model_dir, tmp_path)
    weights = artifact / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    spec = json.loads((artifact / "model.json").read_text())
    spec.pop("sha256")  # so the loader, not the checksum, meets the damage
    (artifact / "model.json").write_text(json.dumps(spec))
    _expect_start_failure(artifact, fragments=("model.safetensors",))


def test_a_sha256_mismatch_refuses_to_start(default_model_dir, tmp_path):
    artifact = _copy(default_model_dir, tmp_path)
    spec = json.loads((artifact / "model.json").read_text())
    spec["sha256"] = "0" * 64
    (artifact / "model.json").write_text(json.dumps(spec))
    _expect_start_failure(artifact, fragments=("sha256", "0" * 64))


def test_a_wrong_architecture_fails_the_start(default_model_dir, tmp_path):
    artifact = _copy(default_model_dir, tmp_path)
    spec = json.loads((artifact / "model.json").read_text())
    spec["architecture"] = "resnet18"
    (artifact / "model.json").write_text(json.dumps(spec))
    _expect_start_failure(artifact, fragments=("model.safetensors",))


class _Payload:
    """Unpickling this runs os.system: the classic pickle exploit."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_tampered_pickle_artifact_is_refused_and_its_payload_never_runs(default_model_dir, tmp_path):
    artifact = _copy(default_model_dir, tmp_path)
    marker = tmp_path / "pwned"
    with open(artifact / "model.pth", "wb") as f:
        pickle.dump({"conv.weight": _Payload(marker)}, f)
    spec = json.loads((artifact / "model.json").read_text())
    spec.update(format="state_dict", file="model.pth")
    spec.pop("sha256")
    (artifact / "model.json").write_text(json.dumps(spec))
    _expect_start_failure(artifact, fragments=("model.pth",))
    assert not marker.exists(), "the pickle payload ran"


@pytest.mark.parametrize("uri", ["hdfs://namenode/models/x", "git://example.com/repo", "hf://org/model"])
def test_storage_uris_outside_the_allow_list_are_refused(tmp_path, uri):
    _expect_start_failure(tmp_path / "models", "--storage_uri", uri, fragments=("scheme",))


def test_invalid_batching_flags_fail_the_start_with_the_rule(default_model_dir):
    _expect_start_failure(default_model_dir, "--max_batch_size", "0", fragments=("max_batch_size must be",))


def test_batch_buckets_that_cannot_hold_the_largest_batch_fail_the_start_with_the_rule(default_model_dir):
    _expect_start_failure(
        default_model_dir,
        "--compile",
        "--max_batch_size",
        "8",
        "--batch_buckets",
        "1,4",
        fragments=("the largest of batch_buckets must equal max_batch_size (8)",),
    )


def test_each_config_takes_its_defaults_from_its_own_fields():
    from predictor.__main__ import build_parser
    from predictor.batching import BatchingConfig
    from predictor.engine import EngineConfig
    from predictor.limits import RequestLimits
    from predictor.server import ServerConfig

    args = build_parser().parse_args([])
    for config in (ServerConfig, EngineConfig, BatchingConfig, RequestLimits):
        assert config.from_args(args) == config()
    args = build_parser().parse_args(["--max_batch_size", "8", "--batch_buckets", "1,8", "--compile"])
    assert EngineConfig.from_args(args).max_batch_size == BatchingConfig.from_args(args).max_batch_size == 8
    assert EngineConfig.from_args(args).batch_buckets == (1, 8)


def test_the_start_log_has_one_line_per_warmed_batch_shape(tmp_path):
    # What an operator sizes a Kubernetes startupProbe from.
    make_small_artifact(tmp_path / "small")
    running = launcher.start(tmp_path / "small", "--max_batch_size", "4")
    running.stop()
    lines = [line for line in running.log().splitlines() if "engine warm-up: batch size" in line]
    assert [line.split("engine warm-up: ")[1].split(" ready in ")[0] for line in lines] == [
        "batch size 1",
        "batch size 4",
    ], running.log()[-2000:]


def test_latency_log_lines_are_off_by_default_and_on_when_asked(tmp_path):
    from predictor.__main__ import build_parser

    assert build_parser().parse_args([]).enable_latency_logging is False
    make_small_artifact(tmp_path / "small")
    for flag, expect_lines in (("false", False), ("true", True)):
        running = launcher.start(tmp_path / "small", "--enable_latency_logging", flag)
        try:
            r = httpx.post(
                f"{running.base_url}/v1/models/{running.model_name}:predict",
                json={"instances": [{"b64": b64(jpeg("chelsea"))}]},
                timeout=60,
            )
            assert r.status_code == 200, r.text
        finally:
            running.stop()
        log = running.log()
        assert ("kserve.trace" in log) is expect_lines, log[-2000:]
        assert ("predict_ms" in log) is expect_lines, log[-2000:]
