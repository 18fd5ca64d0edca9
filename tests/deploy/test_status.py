"""`make status`: URL, traffic split, revisions and the Ready condition."""

from isvctl import cli

from .conftest import FakeClock, FakeCluster


def status(capsys, fixture):
    assert cli.main(["status"], cluster_factory=lambda: FakeCluster(fixture), clock=FakeClock()) == 0
    return capsys.readouterr().out


def test_serverless_canary_status(capsys):
    assert (
        status(capsys, "serverless-canary-10")
        == """\
InferenceService ml-serving/image-classifier (Serverless mode)
  URL:          http://image-classifier.ml-serving.example.com
  Ready:        True
  storageUri:   s3://models/image-classifier/v2
  canary:       10% (canaryTrafficPercent)
  revisions:
    latest created:      image-classifier-predictor-00002
    latest ready:        image-classifier-predictor-00002
    rolled out:          image-classifier-predictor-00001
    previous rolled out: -
  traffic:
     10%  image-classifier-predictor-00002 [latest]
     90%  image-classifier-predictor-00001 [prev]
"""
    )


def test_failed_status_shows_the_reason(capsys):
    out = status(capsys, "serverless-revision-failed")
    assert '  Ready:        False (RevisionFailed: Revision "image-classifier-predictor-00002" failed' in out


def test_standard_status_has_no_revisions(capsys):
    out = status(capsys, "standard-ready")
    assert out.splitlines()[0] == "InferenceService ml-serving/image-classifier (Standard mode)"
    assert "  traffic:      100% to the predictor Deployment (Standard mode has no split)" in out
