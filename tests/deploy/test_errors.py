"""Each way a deploy can fail ends in one clear sentence on stderr and exit code 1, never a traceback."""

import os
import socket
import subprocess
import sys

import pytest

from isvctl import cli

from .conftest import KUBECTL, REPO_ROOT, FakeClock, FakeCluster
from .fake_apiserver import FakeAPIServer, forbidden, not_found


def deploy_py(*args, kubeconfig, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    env.update(KUBECONFIG=str(kubeconfig), HOME=str(tmp_path), TMPDIR=str(tmp_path))
    return subprocess.run(
        [sys.executable, "scripts/deploy.py", *args, "--kubectl", KUBECTL],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_clean_error(done, message):
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: {message}"
    assert done.stdout == ""


def test_no_kubeconfig_and_no_cluster(tmp_path):
    done = deploy_py("status", kubeconfig=tmp_path / "missing", tmp_path=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: no Kubernetes configuration: set KUBECONFIG or ~/.kube/config")


def test_api_server_unreachable(tmp_path):
    with socket.socket() as sock:  # a loopback port with nothing listening: refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "kubeconfig"
    config.write_text(f"""apiVersion: v1
kind: Config
current-context: gone
clusters: [{{name: gone, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
contexts: [{{name: gone, context: {{cluster: gone, user: u}}}}]
users: [{{name: u, user: {{token: t}}}}]
""")
    done = deploy_py("status", kubeconfig=config, tmp_path=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: cannot reach the Kubernetes API server at http://127.0.0.1:{port}")


def test_kserve_crds_missing(tmp_path):
    with FakeAPIServer(with_kserve=False) as api:
        done = deploy_py("status", kubeconfig=api.kubeconfig(tmp_path), tmp_path=tmp_path)
    assert_clean_error(
        done,
        "the cluster does not serve InferenceService (serving.kserve.io/v1beta1): install KServe 0.21.0 (its CRDs)",
    )


@pytest.mark.parametrize("command, verb", [("status", "get"), ("promote", "get")])
def test_rbac_forbidden_names_the_verb_and_resource(tmp_path, command, verb):
    with FakeAPIServer(isvc_answer=forbidden(verb)) as api:
        done = deploy_py(command, kubeconfig=api.kubeconfig(tmp_path), tmp_path=tmp_path)
    assert_clean_error(
        done,
        f"forbidden: not allowed to {verb} inferenceservices.serving.kserve.io in namespace "
        "ml-serving (RBAC; the deployer Role is in inferenceservices/components/security)",
    )


def test_rbac_forbidden_on_patch(tmp_path):
    import json

    from .conftest import recorded

    routes_doc = recorded("serverless-canary-10")
    with FakeAPIServer(isvc_answer=(200, routes_doc)) as api:
        # GET answers the document; the PATCH to the same path is refused.
        api_forbidden = forbidden("patch")
        original = api._httpd.RequestHandlerClass.do_PATCH

        def refuse(handler):
            data = json.dumps(api_forbidden[1]).encode()
            handler.send_response(403)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

        api._httpd.RequestHandlerClass.do_PATCH = refuse
        try:
            done = deploy_py("promote", kubeconfig=api.kubeconfig(tmp_path), tmp_path=tmp_path)
        finally:
            api._httpd.RequestHandlerClass.do_PATCH = original
    assert "promote: ml-serving/image-classifier" in done.stdout
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "error: forbidden: not allowed to patch inferenceservices.serving.kserve.io in "
        "namespace ml-serving (RBAC; the deployer Role is in "
        "inferenceservices/components/security)"
    )


def test_inferenceservice_not_found(tmp_path):
    with FakeAPIServer(isvc_answer=not_found()) as api:
        done = deploy_py("status", kubeconfig=api.kubeconfig(tmp_path), tmp_path=tmp_path)
    assert_clean_error(done, "InferenceService ml-serving/image-classifier not found: run `make deploy` first")


def test_a_failed_revision_after_deploy_shows_the_condition_and_pod_events(capsys):
    events = [
        "Warning Failed pod/image-classifier-predictor-00002-deployment-5c9-abcde: "
        "Error: failed to pull and unpack image"
    ]
    cluster = FakeCluster("serverless-canary-pending", "serverless-revision-failed", events=events)
    code = cli.main(
        ["deploy", "--overlay", "serverless", "--kubectl", KUBECTL], cluster_factory=lambda: cluster, clock=FakeClock()
    )
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.startswith("error: ml-serving/image-classifier: ModelLoadFailed: RuntimeError: model.json")
    assert '  PredictorReady: RevisionFailed: Revision "image-classifier-predictor-00002" failed' in err
    assert "recent pod events:\n  Warning Failed pod/image-classifier-predictor-00002-deployment-5c9-abcde" in err
    assert [o["kind"] for o in cluster.applied][-1] == "InferenceService"


def test_deploy_times_out_with_what_it_was_waiting_for(capsys):
    cluster = FakeCluster("serverless-canary-pending")
    code = cli.main(
        ["deploy", "--overlay", "gpu", "--kubectl", KUBECTL, "--timeout-s", "30"],
        cluster_factory=lambda: cluster,
        clock=FakeClock(),
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ml-serving/image-classifier: timed out after 30 s: model InProgress")


def test_a_missing_overlay_is_named(capsys):
    code = cli.main(["render", "--overlay", "prod", "--kubectl", KUBECTL], cluster_factory=FakeCluster)
    assert code == 1
    assert capsys.readouterr().err.startswith("error: no overlay at ")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["autoscale", "--min-replicas", "5", "--max-replicas", "2"], "MIN_REPLICAS (5) is above MAX_REPLICAS (2)"),
        (
            ["autoscale", "--scale-metric", "concurrency"],
            "SCALE_METRIC must be one of cpu, memory in Standard mode, got concurrency",
        ),
        (["autoscale", "--min-replicas", "0"], "MIN_REPLICAS=0 (scale to zero) needs Serverless mode"),
        (["autoscale"], "nothing to change: set MIN_REPLICAS, MAX_REPLICAS, SCALE_METRIC or SCALE_TARGET"),
        (["canary"], "a canary needs a new STORAGE_URI or IMAGE"),
    ],
)
def test_invalid_requests_are_refused_before_anything_is_sent(capsys, argv, message):
    cluster = FakeCluster("standard-ready")
    code = cli.main(argv, cluster_factory=lambda: cluster, clock=FakeClock())
    assert code == 1
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert cluster.patches == []


def test_rollback_in_standard_mode_without_a_recorded_previous_model(capsys):
    code = cli.main(["rollback"], cluster_factory=lambda: FakeCluster("standard-ready"), clock=FakeClock())
    assert code == 1
    assert "has no recorded previous model" in capsys.readouterr().err
