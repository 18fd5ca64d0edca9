"""DRY_RUN prints exactly what would be sent, and sends nothing."""

import json
import subprocess
import sys

import pytest
from isvctl import cli

from .conftest import KUBECTL, REPO_ROOT, FakeClock, FakeCluster

NS_NAME = ["--namespace", "ml-serving", "--name", "image-classifier"]


def run(capsys, argv, cluster):
    code = cli.main(
        argv + NS_NAME + ["--dry-run", "--kubectl", KUBECTL], cluster_factory=lambda: cluster, clock=FakeClock()
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert cluster.patches == [] and cluster.applied == [] and cluster.deleted == []
    return out.out


def test_deploy_dry_run_prints_the_rendered_overlay_and_needs_no_cluster(capsys):
    cluster = FakeCluster("serverless-ready")
    out = run(capsys, ["deploy", "--overlay", "gpu", "--storage-uri", "s3://bucket/m/v7"], cluster)
    header, body = out.split("\n", 1)
    assert header == "# DRY RUN: server-side apply of 9 objects (field manager isvctl); nothing is sent to the cluster"
    rendered = subprocess.run(
        [
            sys.executable,
            "scripts/deploy.py",
            "render",
            "--overlay",
            "gpu",
            "--kubectl",
            KUBECTL,
            "--storage-uri",
            "s3://bucket/m/v7",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert body == rendered
    assert "storageUri: s3://bucket/m/v7" in body
    assert cluster.gets == 0


def test_canary_dry_run_prints_each_step_the_gate_and_the_rollback(capsys):
    out = run(
        capsys,
        [
            "canary",
            "--storage-uri",
            "s3://models/image-classifier/v2",
            "--steps",
            "10,100",
            "--bake-time-s",
            "120",
            "--timeout-s",
            "600",
        ],
        FakeCluster("serverless-ready"),
    )

    def patch(p):
        return (
            "PATCH serving.kserve.io/v1beta1 InferenceService ml-serving/image-classifier "
            "(application/merge-patch+json)\n" + json.dumps(p, indent=2, sort_keys=True)
        )

    expected = (
        "\n".join(
            [
                "# DRY RUN: canary; nothing is sent to the cluster",
                "# canary of ml-serving/image-classifier (Serverless mode), "
                "serving s3://models/image-classifier/v1 now",
                "# step 1/2: 10% of traffic to the new model",
                patch(
                    {
                        "metadata": {
                            "annotations": {
                                "isvctl.image-classifier.dev/previous-storage-uri": "s3://models/image-classifier/v1"
                            }
                        },
                        "spec": {
                            "predictor": {
                                "canaryTrafficPercent": 10,
                                "model": {"storageUri": "s3://models/image-classifier/v2"},
                            }
                        },
                    }
                ),
                "# then wait up to 600 s for it, bake 120 s, gate on readiness (PROMETHEUS_URL not set)",
                "# step 2/2: 100% of traffic to the new model",
                patch({"spec": {"predictor": {"canaryTrafficPercent": 100}}}),
                "# then wait up to 600 s for it, bake 120 s, gate on readiness (PROMETHEUS_URL not set)",
                "# after the last gate passes: promote",
                patch({"spec": {"predictor": {"canaryTrafficPercent": None}}}),
                "# if a step fails: roll back",
                patch({"spec": {"predictor": {"canaryTrafficPercent": 0}}}),
            ]
        )
        + "\n"
    )
    assert out == expected


def test_canary_dry_run_in_standard_mode_is_one_rolling_step_with_a_storage_rollback(capsys):
    out = run(
        capsys,
        ["canary", "--storage-uri", "s3://models/image-classifier/v2", "--steps", "10,50,100"],
        FakeCluster("standard-ready"),
    )
    assert "# Standard mode cannot split traffic: the new model replaces every replica in one step\n" in out
    assert "# step 1/1: all replicas to the new model\n" in out
    rollback = out.split("# if a step fails: roll back\n")[1]
    assert json.loads(rollback.split("\n", 1)[1]) == {
        "metadata": {"annotations": {"isvctl.image-classifier.dev/previous-storage-uri": None}},
        "spec": {"predictor": {"model": {"storageUri": "s3://models/image-classifier/v1"}}},
    }


@pytest.mark.parametrize(
    "fixture, expected_patch",
    [
        ("serverless-canary-10", {"spec": {"predictor": {"canaryTrafficPercent": None}}}),
    ],
)
def test_promote_dry_run(capsys, fixture, expected_patch):
    out = run(capsys, ["promote"], FakeCluster(fixture))
    assert out == (
        "# DRY RUN: promote; nothing is sent to the cluster\n"
        "PATCH serving.kserve.io/v1beta1 InferenceService ml-serving/image-classifier "
        "(application/merge-patch+json)\n" + json.dumps(expected_patch, indent=2, sort_keys=True) + "\n"
    )


@pytest.mark.parametrize(
    "fixture, expected_patch",
    [
        ("serverless-canary-10", {"spec": {"predictor": {"canaryTrafficPercent": 0}}}),
        (
            "standard-updated",
            {
                "metadata": {"annotations": {"isvctl.image-classifier.dev/previous-storage-uri": None}},
                "spec": {"predictor": {"model": {"storageUri": "s3://models/image-classifier/v1"}}},
            },
        ),
    ],
)
def test_rollback_dry_run(capsys, fixture, expected_patch):
    out = run(capsys, ["rollback"], FakeCluster(fixture))
    assert out == (
        "# DRY RUN: rollback; nothing is sent to the cluster\n"
        "PATCH serving.kserve.io/v1beta1 InferenceService ml-serving/image-classifier "
        "(application/merge-patch+json)\n" + json.dumps(expected_patch, indent=2, sort_keys=True) + "\n"
    )


def test_autoscale_dry_run_sends_only_the_given_fields(capsys):
    out = run(
        capsys,
        [
            "autoscale",
            "--min-replicas",
            "0",
            "--max-replicas",
            "8",
            "--scale-metric",
            "concurrency",
            "--scale-target",
            "",
        ],
        FakeCluster("serverless-ready"),
    )
    assert out == (
        "# DRY RUN: autoscale; nothing is sent to the cluster\n"
        "PATCH serving.kserve.io/v1beta1 InferenceService ml-serving/image-classifier "
        "(application/merge-patch+json)\n"
        + json.dumps(
            {"spec": {"predictor": {"maxReplicas": 8, "minReplicas": 0, "scaleMetric": "concurrency"}}},
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )


def test_undeploy_dry_run_lists_deletions_inferenceservice_first(capsys):
    out = run(capsys, ["undeploy", "--overlay", "raw-keda"], FakeCluster("standard-ready"))
    lines = out.splitlines()
    assert lines[0] == "# DRY RUN: delete of 10 objects; nothing is sent to the cluster"
    assert lines[1] == "DELETE keda.sh/v1alpha1 ScaledObject ml-serving/image-classifier-predictor"
    assert lines[2] == "DELETE serving.kserve.io/v1beta1 InferenceService ml-serving/image-classifier"


def test_predict_dry_run_shows_the_v1_and_v2_requests(capsys):
    out = run(capsys, ["predict", "--ingress-url", "http://127.0.0.1:8080"], FakeCluster("serverless-ready"))
    assert (
        "POST http://127.0.0.1:8080/v1/models/image-classifier:predict "
        "(Host: image-classifier.ml-serving.example.com)" in out
    )
    assert (
        "POST http://127.0.0.1:8080/v2/models/image-classifier/infer "
        "(Host: image-classifier.ml-serving.example.com)" in out
    )


def test_make_passes_dry_run_and_variables_through(tmp_path):
    done = subprocess.run(
        [
            "make",
            "-n",
            "canary",
            "DRY_RUN=1",
            "NAMESPACE=prod",
            "NAME=cats",
            "STORAGE_URI=s3://b/v9",
            "CANARY_STEPS=10,50,100",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    joined = done.stdout.replace("\\\n", " ")
    line = next(line for line in joined.splitlines() if "scripts/deploy.py canary" in line)
    for expected in (
        "--namespace prod",
        "--name cats",
        "--dry-run",
        "--storage-uri 's3://b/v9'",
        "--steps '10,50,100'",
    ):
        assert expected in line
