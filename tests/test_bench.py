"""`scripts/bench.py` at a tiny size, through its CLI as `make bench` runs it, so it cannot rot.

Figures are not asserted (they depend on the machine); the report's shape, zero errors and
the plot are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.artifacts import make_small_artifact
from devtools.bench.sweep import STAGES, batch_distribution
from devtools.metrics import parse
from devtools.photos import CAT_CLASSES

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = ("grpc", "rest", "v1")
CONCURRENCY = (1, 3)
ENGINE_BATCH_SIZES = (1, 2)


def run_bench(*flags: str, output_dir: Path, timeout_s: float) -> dict:
    """scripts/bench.py as `make bench` runs it; its bench.json."""
    cmd = [sys.executable, "scripts/bench.py", *flags, "--output_dir", str(output_dir)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((output_dir / "bench.json").read_text())


@pytest.fixture(scope="module")
def report(default_model_dir, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    data = run_bench(
        "--model_dir",
        str(default_model_dir),
        "--protocols",
        ",".join(PROTOCOLS),
        "--concurrency",
        ",".join(map(str, CONCURRENCY)),
        "--duration_s",
        "0.7",
        "--warmup_s",
        "0.2",
        "--max_batch_size",
        "4",
        "--max_latency_ms",
        "2",
        "--engine_batch_size",
        ",".join(map(str, ENGINE_BATCH_SIZES)),
        output_dir=out,
        timeout_s=85,
    )
    return data, out


def test_every_step_ran_without_errors(report):
    data, _ = report
    steps = data["steps"]
    expected = {(c, p, n) for c in ("batched", "baseline") for p in PROTOCOLS for n in CONCURRENCY}
    assert {(s["config"], s["protocol"], s["concurrency"]) for s in steps} == expected
    for s in steps:
        assert s["errors_total"] == 0 and s["errors"] == {}, s
        assert s["requests_ok"] > 0 and s["images_per_s"] > 0, s
        assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p90"] <= s["latency_ms"]["p99"], s


def test_batch_sizes_come_from_the_servers_metrics(report):
    data, _ = report
    for s in data["steps"]:
        batches = s["batch_size"]
        assert batches is not None and batches["batches"] > 0, s
        assert sum(batches["buckets"].values()) == batches["batches"], s
        assert 1 <= batches["mean"] <= (4 if s["config"] == "batched" else 1), s
        if s["config"] == "baseline":
            assert batches["buckets"]["1"] == batches["batches"], s
        assert s["stage_ms"]["inference"]["per_image"] > 0, s
        assert set(STAGES) <= set(s["stage_ms"]), s


def test_report_has_summary_gain_engine_machine_and_plot(report):
    data, out = report
    assert {(g["protocol"], g["concurrency"]) for g in data["batching_gain"]} == {
        (p, n) for p in PROTOCOLS for n in CONCURRENCY
    }
    assert all(g["ratio"] > 0 for g in data["batching_gain"])
    assert len(data["summary"]) == 2 * len(PROTOCOLS) * len(CONCURRENCY)
    engine = data["engine"]
    assert [r["batch_size"] for r in engine["results"]] == list(ENGINE_BATCH_SIZES)
    assert all(r["engine_images_per_s"] > 0 and r["plain_images_per_s"] > 0 for r in engine["results"])
    assert data["machine"]["cpu_cores"] >= 1 and data["machine"]["cpu_model"]
    # Every protocol path really classified the photo, not just answered 200.
    assert set(data["top_class"]) == {f"{c}/{p}" for c in ("batched", "baseline") for p in PROTOCOLS}
    assert set(data["top_class"].values()) <= CAT_CLASSES, data["top_class"]
    png = out / "bench.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _batch_histogram(cumulative: dict[str, float], total: float) -> str:
    lines = [f'predictor_batch_size_bucket{{le="{le}"}} {n}' for le, n in cumulative.items()]
    count = list(cumulative.values())[-1]
    return (
        "# TYPE predictor_batch_size histogram\n"
        + "\n".join(lines)
        + (f"\npredictor_batch_size_count {count}\npredictor_batch_size_sum {total}\n")
    )


def test_batch_histogram_diff_is_per_bucket_not_cumulative():
    before = parse(_batch_histogram({"1.0": 1, "2.0": 1, "4.0": 2, "+Inf": 2}, total=5))
    after = parse(_batch_histogram({"1.0": 3, "2.0": 5, "4.0": 9, "+Inf": 9}, total=24))
    assert batch_distribution(before, after) == {
        "batches": 7,
        "images": 19,
        "mean": 2.71,
        "buckets": {"1": 2, "2": 2, "4": 3, "+Inf": 0},
    }


def test_clients_spread_over_processes_load_a_multi_worker_server(tmp_path):
    """The set-up a GPU benchmark needs: client processes and gRPC channels against --workers."""
    make_small_artifact(tmp_path / "small")
    steps = run_bench(
        "--model_dir",
        str(tmp_path / "small"),
        "--model_name",
        "small",
        "--protocols",
        "grpc,v1",
        "--concurrency",
        "4",
        "--duration_s",
        "1",
        "--warmup_s",
        "0.3",
        "--skip_engine",
        "--skip_baseline",
        "--client_processes",
        "2",
        "--grpc_channels",
        "4",
        "--server_args",
        "--workers 2",
        output_dir=tmp_path / "out",
        timeout_s=120,
    )["steps"]
    assert {s["protocol"] for s in steps} == {"grpc", "v1"}
    for s in steps:
        assert s["errors_total"] == 0 and s["requests_ok"] > 0, s
        assert s["client_cpu_s"] > 0, s  # summed over the client processes
        # The server's /metrics, summed over its workers, saw the window's requests.
        assert s["batch_size"]["images"] >= s["requests_ok"] * 0.5, s
