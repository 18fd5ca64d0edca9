"""The canary state machine against recorded InferenceService documents, in both modes."""

import pytest
from isvctl import canary, isvc
from isvctl.errors import DeployError, GateFailed, RolloutFailed
from isvctl.gates import PrometheusGate, ReadinessGate, Thresholds, Verdict, judge

from .conftest import FakeCluster, recorded

V2 = "s3://models/image-classifier/v2"
PREV = "isvctl.image-classifier.dev/previous-storage-uri"


def plan(steps=(10,), bake_time_s=60.0, timeout_s=300.0):
    return canary.CanaryPlan(
        storage_uri=V2, image=None, steps_percent=tuple(steps), bake_time_s=bake_time_s, timeout_s=timeout_s, poll_s=5.0
    )


class ScriptedGate:
    """Passes or fails step by step, as listed."""

    def __init__(self, *results: bool):
        self.results = list(results)
        self.calls = []

    def describe(self):
        return "scripted"

    def check(self, state, revision, window_s):
        self.calls.append((revision, window_s))
        passed = self.results.pop(0)
        return Verdict(passed, "fine" if passed else "error ratio 0.2000 (max 0.0100)")


def run(cluster, the_plan, gate, clock):
    current = isvc.parse(cluster.get_isvc("ml-serving", "image-classifier"))
    lines = []
    state = canary.run(cluster, current, the_plan, gate, clock=clock, say=lines.append)
    return state, lines


def test_serverless_steps_through_each_share_bakes_gates_and_promotes(clock):
    cluster = FakeCluster(
        "serverless-ready",
        "serverless-canary-pending",
        "serverless-canary-10",
        "serverless-canary-10",
        "serverless-canary-50",
        "serverless-canary-50",
        "serverless-canary-100",
        "serverless-canary-100",
        "serverless-promoted",
    )
    gate = ScriptedGate(True, True, True)
    state, lines = run(cluster, plan(steps=(10, 50, 100), bake_time_s=120), gate, clock)
    assert cluster.patches == [
        {
            "metadata": {"annotations": {PREV: "s3://models/image-classifier/v1"}},
            "spec": {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": V2}}},
        },
        {"spec": {"predictor": {"canaryTrafficPercent": 50}}},
        {"spec": {"predictor": {"canaryTrafficPercent": 100}}},
        {"spec": {"predictor": {"canaryTrafficPercent": None}}},
    ]
    assert gate.calls == [("image-classifier-predictor-00002", 120)] * 3
    assert clock.sleeps_s.count(120) == 3
    assert state.latest_rolledout == "image-classifier-predictor-00002"
    assert state.percent_of("image-classifier-predictor-00002") == 100
    assert "step 2/3: 50% of traffic to s3://models/image-classifier/v2" in lines


def test_serverless_single_step_leaves_the_canary_for_a_human_to_promote(clock):
    cluster = FakeCluster("serverless-ready", "serverless-canary-10")
    state, lines = run(cluster, plan(steps=(10,)), ScriptedGate(True), clock)
    assert len(cluster.patches) == 1
    assert state.canary_percent == 10
    assert lines[-1] == "canary holds 10% of traffic: `make promote` to finish, `make rollback` to abort"


def test_serverless_gate_failure_rolls_back_to_the_previous_revision(clock):
    cluster = FakeCluster(
        "serverless-ready",
        "serverless-canary-10",
        "serverless-canary-10",
        "serverless-canary-50",
        "serverless-canary-50",
        "serverless-rolled-back",
    )
    with pytest.raises(GateFailed) as failed:
        run(cluster, plan(steps=(10, 50, 100)), ScriptedGate(True, False), clock)
    assert cluster.patches[-1] == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    assert len(cluster.patches) == 3
    assert str(failed.value) == (
        "canary gate failed at 50%: error ratio 0.2000 (max 0.0100)\n"
        "rolled back: all traffic on image-classifier-predictor-00001"
    )


def test_serverless_failed_revision_rolls_back_and_explains_with_condition_and_events(clock):
    events = [
        "Warning BackOff pod/image-classifier-predictor-00002-deployment-7d9f-x2k: "
        "Back-off restarting failed container kserve-container"
    ]
    cluster = FakeCluster(
        "serverless-ready",
        "serverless-canary-pending",
        "serverless-revision-failed",
        "serverless-revision-failed",
        "serverless-rolled-back",
        events=events,
    )
    with pytest.raises(RolloutFailed) as failed:
        run(cluster, plan(), ScriptedGate(), clock)
    text = str(failed.value)
    assert text.startswith(
        "ml-serving/image-classifier: ModelLoadFailed: RuntimeError: model.json in "
        "/mnt/models declares 1000 classes but the weights have 10."
    )
    assert 'Revision "image-classifier-predictor-00002" failed with message' in text
    assert "recent pod events:\n  Warning BackOff pod/image-classifier-predictor-00002" in text
    assert text.endswith("rolled back: all traffic on image-classifier-predictor-00001")
    assert cluster.patches[-1] == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}


def test_a_revision_that_never_becomes_ready_times_out_and_rolls_back(clock):
    cluster = FakeCluster("serverless-ready", *["serverless-canary-pending"] * 200)
    cluster.docs.append(recorded("serverless-rolled-back"))
    with pytest.raises(RolloutFailed) as failed:
        canary.run(
            cluster,
            isvc.parse(recorded("serverless-ready")),
            plan(timeout_s=60),
            ScriptedGate(),
            clock=clock,
            say=lambda _: None,
        )
    assert "timed out after 60 s: revision image-classifier-predictor-00002 starting" in str(failed.value)


def test_standard_mode_rolls_all_replicas_in_one_gated_step(clock):
    cluster = FakeCluster("standard-ready", "standard-rolling", "standard-updated", "standard-updated")
    gate = ScriptedGate(True)
    state, lines = run(cluster, plan(steps=(10, 50, 100)), gate, clock)
    assert cluster.patches == [
        {
            "metadata": {"annotations": {PREV: "s3://models/image-classifier/v1"}},
            "spec": {"predictor": {"model": {"storageUri": V2}}},
        }
    ]
    assert gate.calls == [(None, 60.0)]
    assert lines[0] == "Standard mode cannot split traffic: the new model replaces every replica in one step"
    assert state.storage_uri == V2


def test_standard_mode_failed_load_restores_the_previous_storage_uri(clock):
    cluster = FakeCluster(
        "standard-ready", "standard-rolling", "standard-failed", "standard-failed", "standard-rolled-back"
    )
    with pytest.raises(RolloutFailed) as failed:
        run(cluster, plan(), ScriptedGate(), clock)
    assert cluster.patches[-1] == {
        "metadata": {"annotations": {PREV: None}},
        "spec": {"predictor": {"model": {"storageUri": "s3://models/image-classifier/v1"}}},
    }
    assert str(failed.value).endswith("rolled back: all traffic on s3://models/image-classifier/v1")


def test_standard_mode_gate_failure_restores_the_previous_storage_uri(clock):
    cluster = FakeCluster("standard-ready", "standard-updated", "standard-updated", "standard-rolled-back")
    with pytest.raises(GateFailed):
        run(cluster, plan(), ScriptedGate(False), clock)
    assert cluster.patches[-1]["spec"]["predictor"]["model"]["storageUri"] == "s3://models/image-classifier/v1"


def test_a_canary_of_the_model_already_served_is_refused(clock):
    cluster = FakeCluster("serverless-ready")
    current = isvc.parse(recorded("serverless-ready"))
    same = canary.CanaryPlan("s3://models/image-classifier/v1", None, (10,), 1, 1)
    with pytest.raises(DeployError, match="already serves"):
        canary.run(cluster, current, same, ScriptedGate(), clock=clock, say=lambda _: None)


@pytest.mark.parametrize(
    "text, default, expected", [("", 10, (10,)), ("10,50,100", 10, (10, 50, 100)), ("25", 10, (25,))]
)
def test_steps_parse(text, default, expected):
    assert canary.parse_steps(text, default) == expected


@pytest.mark.parametrize("text", ["50,10", "0,50", "10,10", "10,150", "ten"])
def test_steps_must_rise_within_1_to_100(text):
    with pytest.raises(DeployError, match="CANARY_STEPS"):
        canary.parse_steps(text, 10)


class FakePrometheus:
    def __init__(self, error_ratio, p99_s):
        self.values = {"predictor_requests_total": error_ratio, "histogram_quantile": p99_s}
        self.queries = []

    def query(self, promql):
        self.queries.append(promql)
        return self.values[
            "histogram_quantile" if promql.startswith("histogram_quantile") else "predictor_requests_total"
        ]


def test_prometheus_gate_queries_the_canary_revision_s_own_series():
    source = FakePrometheus(0.001, 0.120)
    state = isvc.parse(recorded("serverless-canary-10"))
    verdict = PrometheusGate(source, Thresholds(0.01, 0.5)).check(state, "image-classifier-predictor-00002", 300)
    assert verdict == Verdict(True, "error ratio 0.0010 (max 0.0100); p99 120 ms (max 500 ms)")
    sel = 'namespace="ml-serving", isvc="image-classifier", revision="image-classifier-predictor-00002"'
    assert source.queries == [
        f'sum(rate(predictor_requests_total{{{sel}, status=~"error|timeout"}}[300s]))'
        f" / sum(rate(predictor_requests_total{{{sel}}}[300s]))",
        f"histogram_quantile(0.99, sum by (le) (rate(predictor_request_seconds_bucket{{{sel}}}[300s])))",
    ]


@pytest.mark.parametrize(
    "error_ratio, p99_s, passed, summary",
    [
        (0.05, 0.1, False, "error ratio 0.0500 (max 0.0100)"),
        (0.0, 0.9, False, "p99 900 ms (max 500 ms)"),
        (None, None, True, "no requests in the window: gated on readiness only"),
        (0.0, None, True, "error ratio 0.0000 (max 0.0100)"),
    ],
)
def test_gate_judgement(error_ratio, p99_s, passed, summary):
    assert judge(error_ratio, p99_s, Thresholds(0.01, 0.5)) == Verdict(passed, summary)


def test_readiness_gate_fails_a_revision_that_is_not_ready():
    state = isvc.parse(recorded("serverless-revision-failed"))
    verdict = ReadinessGate().check(state, "image-classifier-predictor-00002", 60)
    assert not verdict.passed and verdict.summary.startswith("InferenceService not Ready: RevisionFailed")
