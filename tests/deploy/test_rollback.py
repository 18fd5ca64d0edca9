"""Rollback and promote: say at once when there is nothing to return to, never re-promote a
rejected model."""

from .conftest import FakeCluster, isvctl
from .scenes import KnativeStory, StandardStory

V1, V2 = "s3://models/image-classifier/v1", "s3://models/image-classifier/v2"


def test_a_knative_rollback_with_a_single_revision_says_so_at_once(capsys):
    story = KnativeStory("canary")  # the GitOps canary manifest, applied as the first deploy
    cluster = FakeCluster(story.moment())
    _, err = isvctl(capsys, ["rollback", "--overlay", "canary"], cluster, code=1)
    assert "has no earlier model to return to: it has served only s3://models/image-classifier/v2" in err
    assert cluster.patches == []


def test_promote_after_a_rollback_refuses(capsys):
    story = KnativeStory()
    story.patch({"spec": {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": V2}}}})
    story.knative_creates_revision()
    story.revision_ready()
    story.patch({"spec": {"predictor": {"canaryTrafficPercent": 0}}})
    story.knative_routes()
    cluster = FakeCluster(story.moment())
    _, err = isvctl(capsys, ["promote"], cluster, code=1)
    assert "canary was rolled back (canaryTrafficPercent 0): nothing to promote" in err
    assert cluster.patches == []


def test_promote_without_a_canary_refuses(capsys):
    _, err = isvctl(capsys, ["promote", "--overlay", "raw"], FakeCluster(StandardStory().moment()), code=1)
    assert "has no canary" in err


def test_a_standard_rollback_without_a_recorded_model_says_so_at_once(capsys):
    cluster = FakeCluster(StandardStory().moment())
    _, err = isvctl(capsys, ["rollback", "--overlay", "raw"], cluster, code=1)
    assert "has no earlier model to return to: it has served only s3://models/image-classifier/v1" in err
    assert cluster.patches == []


def test_a_spec_canary_rollback_removes_the_canary_and_waits_for_the_route(capsys):
    story = StandardStory("raw", gateway=True)
    entry = {"name": "", "modelFormat": {"name": "pytorch-image-classifier"}, "storageUri": V2}
    story.patch({"spec": {"canary": [{"trafficPercent": 20, "predictor": {"name": "g2", "model": entry}}]}})
    story.kserve_reconciles()
    story.rolled_out("image-classifier-g2-predictor")
    story.moment()
    split = story.moment()
    story.patch({"spec": {"canary": None}})
    story.kserve_reconciles()
    removed = story.moment()
    cluster = FakeCluster(split, split, removed)
    out, _ = isvctl(capsys, ["rollback", "--overlay", "raw"], cluster)
    assert cluster.patches == [{"spec": {"canary": None}}]
    assert "rolled back: all traffic on image-classifier-predictor (s3://models/image-classifier/v1)" in out
