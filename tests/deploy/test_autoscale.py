"""`make autoscale` refuses what KServe's webhook refuses, and waits until what actually scales
(the Knative revision's annotations, KServe's HPA or ScaledObject) reflects the change."""

import pytest

from . import kserve_sim
from .conftest import FakeCluster, isvctl
from .scenes import KnativeStory, StandardStory


@pytest.mark.parametrize(
    "overlay, argv, message",
    [
        (
            "serverless",
            ["--scale-metric", "cpu"],
            "SCALE_METRIC must be concurrency or rps under Knative's KPA, got cpu",
        ),
        ("serverless", ["--scale-metric", "memory"], "SCALE_METRIC must be concurrency or rps"),
        ("raw", ["--scale-metric", "memory", "--scale-target", "512"], "SCALE_TARGET is a utilisation percentage"),
        ("raw", ["--min-replicas", "7"], "MIN_REPLICAS (7) is above maxReplicas in the spec (6)"),
        ("serverless", ["--max-replicas", "0"], "MAX_REPLICAS must be >= 1, got 0"),
        ("raw", ["--min-replicas", "0"], "MIN_REPLICAS=0 (scale to zero) needs Knative mode or the keda"),
        ("raw-keda", ["--scale-metric", "cpu"], "SCALE_METRIC is not supported with the keda autoscaler class"),
        ("raw", [], "nothing to change: set MIN_REPLICAS, MAX_REPLICAS, SCALE_METRIC or SCALE_TARGET"),
    ],
)
def test_refused_before_anything_is_sent(capsys, overlay, argv, message):
    story = KnativeStory(overlay) if overlay == "serverless" else StandardStory(overlay)
    cluster = FakeCluster(story.moment())
    _, err = isvctl(capsys, ["autoscale", "--overlay", overlay, *argv], cluster, code=1)
    assert err.strip() == f"error: {message}" or err.startswith(f"error: {message}")
    assert cluster.patches == []


def test_the_external_class_is_refused_because_nothing_would_change(capsys):
    story = StandardStory()
    story.isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] = "external"
    _, err = isvctl(
        capsys, ["autoscale", "--overlay", "raw", "--max-replicas", "9"], FakeCluster(story.moment()), code=1
    )
    assert "autoscalerClass external: KServe creates no autoscaler" in err


def test_keda_target_changes_the_threshold_of_kserves_scaled_object(capsys):
    story = StandardStory("raw-keda")
    before = [*story.moment(), kserve_sim.scaled_object(story.isvc)]
    patch_seen = {}

    class Cluster(FakeCluster):
        def patch(self, api_version, kind, namespace, name, patch):
            patch_seen.update(patch)
            return super().patch(api_version, kind, namespace, name, patch)

    from .scenes import merge

    after_isvc = merge(story.isvc, {"spec": {"predictor": {"maxReplicas": 8}}})
    after_isvc["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["target"]["value"] = "32"
    story.isvc = after_isvc
    after = [*story.moment(), kserve_sim.scaled_object(after_isvc)]
    cluster = Cluster(before, before, before, after)
    out, _ = isvctl(
        capsys, ["autoscale", "--overlay", "raw-keda", "--max-replicas", "8", "--scale-target", "32"], cluster
    )
    metrics = patch_seen["spec"]["predictor"]["autoScaling"]["metrics"]
    assert metrics[0]["external"]["target"] == {"type": "Value", "value": "32"}
    assert "  … ScaledObject image-classifier-predictor: maxReplicaCount 6 (want 8), threshold 64 (want 32)" in out
    assert "  ✓ ScaledObject image-classifier-predictor: minReplicaCount 2, maxReplicaCount 8, threshold 32" in out


def test_knative_autoscale_waits_for_the_revision_with_the_new_bounds(capsys):
    story = KnativeStory()
    before = story.moment()
    story.patch({"spec": {"predictor": {"minReplicas": 0, "maxReplicas": 8}}})
    story.knative_creates_revision()
    story.revision_ready()
    out, _ = isvctl(
        capsys, ["autoscale", "--min-replicas", "0", "--max-replicas", "8"], FakeCluster(before, before, story.moment())
    )
    assert "  ✓ revision image-classifier-predictor-00002 ready with 100% of traffic" in out
