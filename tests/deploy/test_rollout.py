"""`make deploy` waits for facts the controllers produce, never for status.observedGeneration
(KServe copies it from the Knative Service or the Deployment), and stops at terminal failures."""

from .conftest import FakeCluster, isvctl
from .scenes import CRASH_LOOP, KnativeStory, StandardStory

V2 = "s3://models/image-classifier/v2"


def deploy(capsys, cluster, *extra, overlay="serverless", code=0, clock=None):
    return isvctl(capsys, ["deploy", "--overlay", overlay, *extra], cluster, code=code, clock=clock)


def test_knative_deploy_waits_for_the_new_specs_revision_not_the_generation(capsys):
    story = KnativeStory()
    before = story.moment()
    story.patch({"spec": {"predictor": {"model": {"storageUri": V2}}}})
    # KServe has not reconciled yet, while observedGeneration (the Knative Service's: 1) already
    # equals nothing meaningful: the old revision is Ready.
    not_seen = story.moment()
    story.knative_creates_revision()
    starting = story.moment()
    story.revision_ready()
    cluster = FakeCluster(before, before, not_seen, starting, story.moment())
    out, _ = deploy(capsys, cluster, "--storage-uri", V2)
    assert "  … KServe has not written s3://models/image-classifier/v2" in out
    assert "  … revision image-classifier-predictor-00002 starting" in out
    assert "  ✓ revision image-classifier-predictor-00002 ready with 100% of traffic" in out


def test_a_knative_webhook_denial_ends_the_wait_with_its_message(capsys):
    story = KnativeStory()
    before = story.moment()
    story.patch({"spec": {"predictor": {"model": {"storageUri": V2}}}})
    message = (
        'fails to reconcile predictor: admission webhook "validation.webhook.serving.knative.dev" denied '
        "the request: validation failed: must not set the field(s): spec.template.spec.affinity"
    )
    cluster = FakeCluster(before, before, story.kserve_rejected(message))
    _, err = deploy(capsys, cluster, "--storage-uri", V2, code=1)
    assert err.startswith(f"error: ml-serving/image-classifier: PredictorReady: ReconcileFailed: {message}")


def test_a_stale_failure_is_believed_only_after_a_grace_period(capsys, clock):
    story = KnativeStory()
    rejected = story.kserve_rejected("an earlier spec was refused")
    story.patch({"spec": {"predictor": {"model": {"storageUri": V2}}}})
    story.knative_creates_revision()
    story.revision_ready()
    cluster = FakeCluster(rejected, rejected, rejected, story.moment())
    out, _ = deploy(capsys, cluster, "--storage-uri", V2, clock=clock)
    assert "ready with 100% of traffic" in out


def test_standard_deploy_is_not_fooled_by_an_hpa_bump_right_after_the_patch(capsys):
    story = StandardStory()
    before = story.moment()
    story.patch({"spec": {"predictor": {"model": {"storageUri": V2}}}})
    story.hpa_scales(3)  # Deployment generation 2, observed 2: "seen" by observedGeneration
    bumped = story.moment()
    assert bumped[0]["status"]["observedGeneration"] >= bumped[0]["metadata"]["generation"]
    story.kserve_reconciles()
    story.rolling()
    rolling = story.moment()
    story.rolled_out()
    cluster = FakeCluster(before, before, bumped, rolling, story.moment())
    out, _ = deploy(capsys, cluster, "--storage-uri", V2, overlay="raw")
    assert (
        "  … KServe has not written s3://models/image-classifier/v2, ghcr.io/example/image-classifier-predictor:0.1.0 "
        "into Deployment image-classifier-predictor yet"
    ) in out
    assert "1 out of 3 new replicas have been updated" in out
    assert out.splitlines()[-2] == "  ✓ deployment 'image-classifier-predictor' successfully rolled out"


def test_a_runtime_image_change_waits_for_the_pods_to_roll(capsys):
    story = StandardStory()
    before = story.moment()
    image = "registry.example.com/image-classifier-predictor:0.2.0"
    story.runtime = {**story.runtime, "spec": {**story.runtime["spec"]}}
    story.runtime["spec"]["containers"] = [{**story.runtime["spec"]["containers"][0], "image": image}]
    unchanged = story.moment()  # the InferenceService did not change at all
    story.kserve_reconciles()
    story.rolling()
    rolling = story.moment()
    story.rolled_out()
    cluster = FakeCluster(before, before, unchanged, rolling, story.moment())
    out, _ = deploy(capsys, cluster, "--image", image, overlay="raw")
    assert f"  … KServe has not written s3://models/image-classifier/v1, {image}" in out
    assert "successfully rolled out" in out.splitlines()[-2]


def test_standard_new_pods_crash_looping_fail_the_rollout_though_kserve_says_ready(capsys):
    story = StandardStory()
    before = story.moment()
    story.patch({"spec": {"predictor": {"model": {"storageUri": V2}}}})
    story.kserve_reconciles()
    story.rolling(new_pod=CRASH_LOOP)
    crashing = story.moment()
    status = crashing[0]["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["PredictorReady"] == "True"
    assert status["modelStatus"]["transitionStatus"] == "UpToDate"  # judged from an old pod
    _, err = deploy(capsys, FakeCluster(before, before, crashing), "--storage-uri", V2, overlay="raw", code=1)
    assert "new pod image-classifier-predictor-" in err
    assert "container kserve-container: CrashLoopBackOff (exit code 1): RuntimeError: model.json" in err


def test_a_pending_new_pod_is_reported_while_waiting_and_at_the_timeout(capsys):
    story = StandardStory()
    before = story.moment()
    story.patch({"spec": {"predictor": {"model": {"storageUri": V2}}}})
    story.kserve_reconciles()
    story.rolling(pending=True)
    pending = story.moment()
    _, err = deploy(
        capsys, FakeCluster(before, before, pending), "--storage-uri", V2, "--timeout-s", "60", overlay="raw", code=1
    )
    assert "timed out after 60 s" in err
    assert "Pending: Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu." in err


def test_progress_deadline_exceeded_is_terminal(capsys):
    story = StandardStory()
    before = story.moment()
    story.patch({"spec": {"predictor": {"model": {"storageUri": V2}}}})
    story.kserve_reconciles()
    story.deadline_exceeded()
    _, err = deploy(capsys, FakeCluster(before, before, story.moment()), "--storage-uri", V2, overlay="raw", code=1)
    assert "exceeded its progress deadline" in err


def test_deploy_keeps_the_serving_model_image_and_predictor_name(capsys):
    story = StandardStory("raw", gateway=True)
    story.patch({"spec": {"predictor": {"name": "g3", "model": {"storageUri": V2, "image": "reg/x:2"}}}})
    story.kserve_reconciles()
    story.rolled_out()
    out, _ = isvctl(capsys, ["deploy", "--overlay", "raw", "--dry-run"], FakeCluster(story.moment()))
    assert "      storageUri: s3://models/image-classifier/v2\n" in out
    assert "      image: reg/x:2\n" in out
    assert "    name: g3\n" in out


def test_deploy_refuses_while_a_canary_is_in_progress(capsys):
    story = KnativeStory()
    story.patch({"spec": {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": V2}}}})
    story.knative_creates_revision()
    story.revision_ready()
    _, err = isvctl(capsys, ["deploy", "--overlay", "serverless"], FakeCluster(story.moment()), code=1)
    assert "has a canary in progress: `make promote` or `make rollback` first" in err
