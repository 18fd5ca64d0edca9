"""What the deploy side asks Prometheus for (the canary gates, the KEDA trigger, the dashboard) selects
the model by model_name, and names series and labels that a real predictor exposes."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools import launcher
from devtools.artifacts import make_small_artifact
from devtools.payloads import v1_body
from devtools.photos import jpeg
from isvctl import gates
from isvctl.gates import PrometheusGate, Subject, Thresholds
from isvctl.observe import Observation
from isvctl.ops import ready_revision

from .conftest import MANIFESTS, FakeCluster, kustomize, render
from .scenes import KnativeStory

# Labels Prometheus adds when it scrapes (the PodMonitor's relabelings), not the predictor.
SCRAPE_LABELS = {"namespace", "isvc", "revision", "pod"}
ISVC = "image-classifier"


def _selectors(promql: str) -> list[tuple[str, dict[str, str]]]:
    """Each `metric{label="value", ...}` of a query, with its matchers."""
    return [
        (metric, dict(re.findall(r'(\w+)=~?"([^"]*)"', matchers)))
        for metric, matchers in re.findall(r"(predictor_\w+)\{([^}]*)\}", promql)
    ]


def _deploy_queries() -> dict[str, str]:
    isvc = next(o for o in render("raw-keda") if o["kind"] == "InferenceService")
    (trigger,) = isvc["spec"]["predictor"]["autoScaling"]["metrics"]
    (config_map,) = kustomize(MANIFESTS / "dashboard")
    dashboard = json.loads(config_map["data"]["image-classifier.json"])
    selector = f'namespace="ml-serving", isvc="{ISVC}", model_name="{ISVC}"'
    queries = {
        "keda": trigger["external"]["metric"]["query"],
        "gate error ratio": gates.error_ratio_query(selector, 60),
        "gate p99": gates.p99_latency_query(selector, 60),
    }
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queries[f"dashboard {panel['title']} {target['refId']}"] = target["expr"]
    return queries


@pytest.fixture(scope="module")
def exposed(tmp_path_factory) -> list[tuple[str, dict[str, str]]]:
    """The predictor_* series of a real predictor served as the runtime names it, after some traffic."""
    artifact = tmp_path_factory.mktemp("small")
    make_small_artifact(artifact)
    running = launcher.start(artifact, model_name=ISVC)
    try:
        assert running.post_v1(v1_body(jpeg("chelsea"))).status_code == 200
        assert running.post_v1({"instances": []}).status_code == 400
        text = httpx.get(f"{running.base_url}/metrics", timeout=10).text
    finally:
        running.stop()
    return [
        (sample.name, dict(sample.labels))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("predictor_")
    ]


def test_every_query_selects_the_model_and_names_series_the_predictor_exposes(exposed):
    queries = _deploy_queries()
    assert len(queries) >= 10
    for what, promql in queries.items():
        selectors = _selectors(promql)
        assert selectors, what
        for metric, matchers in selectors:
            assert matchers.get("isvc") in (ISVC, "$isvc"), (what, promql)
            assert matchers.get("model_name") in (ISVC, "$model_name"), (what, promql)
            # The labels the predictor itself sets (status, stage, ...) must exist on the series.
            own = {k: v for k, v in matchers.items() if k not in SCRAPE_LABELS and k != "model_name"}
            assert any(
                name == metric and labels.get("model_name") == ISVC and all(k in labels for k in own)
                for name, labels in exposed
            ), (what, metric, own)


def test_the_dashboard_lists_models_and_the_keda_trigger_follows_the_name():
    (config_map,) = kustomize(MANIFESTS / "dashboard")
    variables = {v["name"]: v for v in json.loads(config_map["data"]["image-classifier.json"])["templating"]["list"]}
    assert variables["model_name"]["definition"] == (
        'label_values(predictor_requests_total{namespace="$namespace", isvc="$isvc"}, model_name)'
    )
    isvc = next(o for o in render("raw-keda", name="b", namespace="prod") if o["kind"] == "InferenceService")
    ((_, matchers),) = _selectors(isvc["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["metric"]["query"])
    assert matchers == {"namespace": "prod", "isvc": "b-image-classifier", "model_name": "b-image-classifier"}


def test_the_canary_gate_asks_for_the_model_the_runtime_serves():
    queries: list[str] = []

    class Recording:
        def query(self, promql: str) -> float | None:
            queries.append(promql)
            return None

    obs = Observation(FakeCluster(KnativeStory().moment()), "ml-serving", ISVC)
    revision = "image-classifier-predictor-00001"
    subject = Subject(f"revision {revision}", f'revision="{revision}"', ready_revision(revision))
    assert PrometheusGate(Recording(), Thresholds()).check(obs, subject, 30).passed
    assert len(queries) == 2
    for promql in queries:
        for _, matchers in _selectors(promql):
            assert matchers["model_name"] == matchers["isvc"] == ISVC
            assert matchers["revision"] == revision
