"""Canaries on the moments the controllers write: Knative's traffic split, the Gateway API split of
spec.canary, and the gated rolling replace; gates every interval during the bake; rollbacks."""

import socket

from isvctl.gates import PrometheusGate, Thresholds, Verdict

from .conftest import FakeCluster, isvctl
from .scenes import CRASH_LOOP, KnativeStory, StandardStory

V1, V2 = "s3://models/image-classifier/v1", "s3://models/image-classifier/v2"
PREV = "isvctl.image-classifier.dev/previous-storage-uri"


class ScriptedGate:
    def __init__(self, *results: bool):
        self.results = list(results)
        self.calls = []

    def describe(self):
        return "scripted"

    def check(self, obs, subject, window_s):
        self.calls.append((subject.what, subject.matchers, window_s))
        passed = self.results.pop(0)
        return Verdict(passed, "fine" if passed else "error ratio 0.2000 (max 0.0100)")


def canary(capsys, cluster, *args, gate, code=0, overlay="serverless"):
    argv = ["canary", "--overlay", overlay, "--storage-uri", V2, "--bake-time-s", "30", "--gate-interval-s", "30"]
    return isvctl(capsys, [*argv, *args], cluster, gate=gate, code=code)


def knative_canary_start(story: KnativeStory, percent: int = 10):
    story.patch(
        {
            "spec": {
                "predictor": {"canaryTrafficPercent": percent, "model": {"storageUri": V2}, "annotations": {PREV: V1}}
            }
        }
    )
    story.knative_creates_revision()
    creating = story.moment()
    story.revision_ready()
    return creating, story.moment()


def test_knative_steps_bake_and_promote_though_observed_generation_lags_for_good(capsys):
    story = KnativeStory()
    start = story.moment()
    creating, at10 = knative_canary_start(story)
    story.patch({"spec": {"predictor": {"canaryTrafficPercent": 50}}})
    story.knative_routes()
    at50 = story.moment()
    story.patch({"spec": {"predictor": {"canaryTrafficPercent": 100}}})
    story.knative_routes()
    at100 = story.moment()
    story.patch({"spec": {"predictor": {"canaryTrafficPercent": None}}})
    story.knative_routes()  # the Knative Service does not change: its generation stays
    promoted = story.moment()
    assert promoted[0]["status"]["observedGeneration"] < promoted[0]["metadata"]["generation"]
    cluster = FakeCluster(start, start, creating, at10, at10, at50, at50, at100, at100, at100, promoted)
    gate = ScriptedGate(True, True, True)
    out, _ = canary(capsys, cluster, "--steps", "10,50,100", gate=gate)
    assert cluster.patches == [
        {"spec": {"predictor": {"annotations": {PREV: V1}, "canaryTrafficPercent": 10, "model": {"storageUri": V2}}}},
        {"spec": {"predictor": {"canaryTrafficPercent": 50}}},
        {"spec": {"predictor": {"canaryTrafficPercent": 100}}},
        {"spec": {"predictor": {"canaryTrafficPercent": None}}},
    ]
    revision = "image-classifier-predictor-00002"
    assert gate.calls == [(f"revision {revision}", f'revision="{revision}"', 30.0)] * 3
    assert f"  ✓ revision {revision} serves all traffic" in out
    assert "  baking, 0 s left: fine" in out


def test_the_gate_is_checked_every_interval_and_the_first_failing_window_rolls_back(capsys):
    story = KnativeStory()
    start = story.moment()
    creating, at10 = knative_canary_start(story)
    # The rollback: 0% to the canary at once with v1 back in the spec, v1's new revision ready at
    # 0%, then the pin removed.
    story.patch(
        {"spec": {"predictor": {"canaryTrafficPercent": 0, "model": {"storageUri": V1}, "annotations": {PREV: None}}}}
    )
    story.knative_creates_revision()
    story.knative_routes()
    pinned = story.moment()
    story.revision_ready()
    v1_ready = story.moment()
    story.patch({"spec": {"predictor": {"canaryTrafficPercent": None}}})
    story.knative_routes()
    done = story.moment()
    cluster = FakeCluster(start, start, creating, at10, at10, at10, at10, pinned, v1_ready, done)
    gate = ScriptedGate(True, False)
    _, err = canary(capsys, cluster, "--bake-time-s", "120", gate=gate, code=1)
    assert len(gate.calls) == 2
    assert err.startswith("error: canary gate failed at 10%: error ratio 0.2000 (max 0.0100)\n")
    assert err.rstrip().endswith(
        "rolled back: all traffic on image-classifier-predictor-00003 (s3://models/image-classifier/v1)"
    )
    assert cluster.patches[1:] == [
        {
            "spec": {
                "predictor": {
                    "annotations": {PREV: None, "isvctl.image-classifier.dev/previous-image": None},
                    "canaryTrafficPercent": 0,
                    "model": {"storageUri": V1},
                }
            }
        },
        {"spec": {"predictor": {"canaryTrafficPercent": None}}},
    ]


def test_an_unreachable_prometheus_is_refused_before_step_one(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cluster = FakeCluster(KnativeStory().moment())
    _, err = isvctl(
        capsys,
        ["canary", "--storage-uri", V2, "--prometheus-url", f"http://127.0.0.1:{port}"],
        cluster,
        code=1,
    )
    assert err.startswith(f"error: cannot query Prometheus at http://127.0.0.1:{port}")
    assert cluster.patches == []


class FailingPrometheus:
    def query(self, promql):
        from isvctl.errors import DeployError

        raise DeployError("Prometheus rejected 'sum(...)': HTTP 400 parse error")


def test_a_failing_prometheus_query_fails_the_gate_with_its_error():
    story = KnativeStory()
    knative_canary_start(story)
    from isvctl.gates import Subject
    from isvctl.observe import Observation
    from isvctl.ops import ready_revision

    obs = Observation(FakeCluster(story.moment()), "ml-serving", "image-classifier")
    revision = "image-classifier-predictor-00002"
    subject = Subject(f"revision {revision}", f'revision="{revision}"', ready_revision(revision))
    verdict = PrometheusGate(FailingPrometheus(), Thresholds()).check(obs, subject, 30)
    assert verdict == Verdict(
        False, "cannot read the canary's metrics: Prometheus rejected 'sum(...)': HTTP 400 parse error"
    )


def test_standard_with_the_gateway_api_canaries_through_spec_canary_and_promotes(capsys):
    story = StandardStory("raw", gateway=True)
    start = story.moment()
    entry = {"name": "", "modelFormat": {"name": "pytorch-image-classifier"}, "storageUri": V2}
    canary_spec = {"trafficPercent": 50, "predictor": {"name": "g2", "model": entry, "annotations": {PREV: V1}}}
    story.patch({"spec": {"canary": [canary_spec]}})
    story.kserve_reconciles()
    story.rolled_out("image-classifier-g2-predictor")
    story.moment()  # KServe sees the canary ready; the route follows on its next reconcile
    at50 = story.moment()
    story.patch({"spec": {"canary": [{**canary_spec, "trafficPercent": 100}]}})
    story.moment()
    at100 = story.moment()
    story.patch(
        {"spec": {"predictor": {"name": "g2", "model": {"storageUri": V2}, "annotations": {PREV: V1}}, "canary": None}}
    )
    story.kserve_reconciles()
    story.rolled_out()
    promoted = story.moment()
    cluster = FakeCluster(start, start, at50, at50, at100, at100, at100, promoted)
    out, _ = canary(capsys, cluster, "--steps", "50,100", overlay="raw", gate=ScriptedGate(True, True))
    assert cluster.patches[0] == {"spec": {"canary": [canary_spec]}}
    assert cluster.patches[-1] == {
        "spec": {"predictor": {"name": "g2", "model": {"storageUri": V2}, "annotations": {PREV: V1}}, "canary": None}
    }
    assert "canary of ml-serving/image-classifier: Gateway API traffic split (spec.canary)" in out
    assert "  ✓ all traffic on image-classifier-g2-predictor" in out


def test_a_standard_rolling_canary_that_crash_loops_is_restored(capsys):
    story = StandardStory()
    start = story.moment()
    story.patch({"spec": {"predictor": {"model": {"storageUri": V2}, "annotations": {PREV: V1}}}})
    story.kserve_reconciles()
    story.rolling(new_pod=CRASH_LOOP)
    crashing = story.moment()
    story.patch({"spec": {"predictor": {"model": {"storageUri": V1}, "annotations": {PREV: None}}}})
    story.kserve_reconciles()
    story.rolled_out()
    restored = story.moment()
    cluster = FakeCluster(start, start, crashing, crashing, restored)
    _, err = canary(capsys, cluster, overlay="raw", gate=ScriptedGate(), code=1)
    assert "CrashLoopBackOff (exit code 1): RuntimeError: model.json" in err
    assert err.rstrip().endswith("rolled back: serving s3://models/image-classifier/v1")
    assert cluster.patches[-1]["spec"]["predictor"]["model"] == {"storageUri": V1}


def test_an_image_canary_sets_the_predictors_image_and_remembers_the_runtimes(capsys):
    out, _ = isvctl(
        capsys,
        ["canary", "--image", "reg.example.com/p:0.2.0", "--dry-run"],
        FakeCluster(KnativeStory().moment()),
    )
    assert '"image": "reg.example.com/p:0.2.0"' in out
    assert '"isvctl.image-classifier.dev/previous-image": ""' in out
