"""Every predictor_* series carries model_name, as KServe's own do, so one Prometheus tells models apart
(what the deploy side queries with it: tests/deploy/test_metric_queries.py)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools import launcher
from devtools.artifacts import make_small_artifact
from devtools.payloads import v1_body
from devtools.photos import jpeg


def _series(text: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (sample.name, dict(sample.labels))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("predictor_")
    ]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two servers of two models, as one Prometheus would scrape them."""
    artifact = tmp_path_factory.mktemp("small")
    make_small_artifact(artifact)
    running = [launcher.start(artifact, model_name=name) for name in ("cats", "dogs")]
    yield running
    for server in running:
        server.stop()


@pytest.fixture(scope="module")
def scraped(two_models) -> dict[str, str]:
    for server, requests in zip(two_models, (3, 1), strict=True):
        for _ in range(requests):
            assert server.post_v1(v1_body(jpeg("chelsea"))).status_code == 200
        assert server.post_v1({"instances": []}).status_code == 400
    return {server.model_name: httpx.get(f"{server.base_url}/metrics").text for server in two_models}


def test_every_predictor_series_names_its_model(scraped):
    for model, text in scraped.items():
        series = _series(text)
        assert len({name for name, _ in series}) >= 12
        assert all(labels.get("model_name") == model for _, labels in series), [
            (n, lab) for n, lab in series if lab.get("model_name") != model
        ][:5]


def test_one_prometheus_tells_the_two_models_apart(scraped):
    merged = [s for text in scraped.values() for s in _series(text)]

    def requests(model: str, status: str) -> float:
        return sum(
            v
            for text in scraped.values()
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "predictor_requests_total" and sample.labels == {"model_name": model, "status": status}
            for v in [sample.value]
        )

    assert (requests("cats", "ok"), requests("dogs", "ok")) == (3, 1)
    assert (requests("cats", "invalid"), requests("dogs", "invalid")) == (1, 1)
    # No two servers expose the same series: nothing collides when both are scraped.
    keys = [(name, tuple(sorted(labels.items()))) for name, labels in merged]
    assert len(keys) == len(set(keys))


def test_every_outcome_and_stage_is_exposed_before_it_first_happens(two_models):
    from predictor import errors, metrics

    outcomes = {errors.OUTCOME_OK, errors.OUTCOME_INVALID, errors.OUTCOME_ERROR}
    outcomes |= {errors.ServerBusy.metric_label, errors.DeadlineExceeded.metric_label}
    assert outcomes == set(metrics.STATUSES)
    fresh = _series(httpx.get(f"{two_models[1].base_url}/metrics").text)
    statuses = {labels["status"] for name, labels in fresh if name == "predictor_requests_total"}
    stages = {labels["stage"] for name, labels in fresh if name == "predictor_stage_seconds_count"}
    assert statuses == set(metrics.STATUSES) and stages == set(metrics.STAGES)
    assert {"predictor_rejected_total", "predictor_expired_total", "predictor_queue_depth"} <= {n for n, _ in fresh}
