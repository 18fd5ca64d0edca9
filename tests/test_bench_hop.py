"""`make bench`'s hop mode at a tiny size: the same predictor, directly and through the transformer, in
one run. Figures are not asserted (they depend on the machine); that both paths answer alike is."""

from __future__ import annotations

from devtools.artifacts import make_small_artifact

from .test_bench import run_bench

PROTOCOLS = ("grpc", "pixels", "v1")


def test_hop_mode_runs_direct_and_through_the_transformer_step_by_step(tmp_path):
    make_small_artifact(tmp_path / "small")
    data = run_bench(
        "--model_dir",
        str(tmp_path / "small"),
        "--model_name",
        "small",
        "--hop",
        "--protocols",
        ",".join(PROTOCOLS),
        "--concurrency",
        "2",
        "--duration_s",
        "0.6",
        "--warmup_s",
        "0.2",
        output_dir=tmp_path / "out",
        timeout_s=150,
    )
    steps = data["steps"]
    assert {(s["config"], s["protocol"]) for s in steps} == {(c, p) for c in ("direct", "hop") for p in PROTOCOLS}
    for s in steps:
        assert s["errors_total"] == 0 and s["requests_ok"] > 0, s
        # Both read the predictor's /metrics: through the hop too, the images reached it.
        assert s["batch_size"]["images"] > 0, s
    for protocol in PROTOCOLS:
        assert data["top_class"][f"hop/{protocol}"] == data["top_class"][f"direct/{protocol}"]
    costs = {c["protocol"]: c for c in data["hop_cost"]}
    assert set(costs) == set(PROTOCOLS)
    assert all(c["added_ms"]["p50"] is not None and c["throughput_ratio"] > 0 for c in costs.values())
    assert "engine" not in data and data["batching_gain"] == []
