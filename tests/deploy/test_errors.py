"""Each way a deploy can fail ends in one clear sentence on stderr and exit code 1, never a traceback."""

import os
import socket
import subprocess

import pytest

from .conftest import KUBECTL, REPO_ROOT, VENV_BIN
from .fake_apiserver import FakeAPIServer, forbidden, not_found, webhook_denied


def deploy_py(*args, kubeconfig, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    env.update(KUBECONFIG=str(kubeconfig), HOME=str(tmp_path), TMPDIR=str(tmp_path))
    return subprocess.run(
        [str(VENV_BIN / "isvctl"), *args, "--kubectl", KUBECTL],
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
        "ml-serving (RBAC; the deployer Role is in inferenceservices/components/security): "
        + forbidden(verb)[1]["message"],
    )


def test_rbac_forbidden_on_patch(tmp_path):
    import json

    from .scenes import KnativeStory

    story = KnativeStory()
    story.patch({"spec": {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": "s3://m/v2"}}}})
    story.knative_creates_revision()
    story.revision_ready()
    routes_doc = story.moment()[0]
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
    assert done.stderr.startswith(
        "error: forbidden: not allowed to patch inferenceservices.serving.kserve.io in "
        "namespace ml-serving (RBAC; the deployer Role is in "
        "inferenceservices/components/security): "
    )


def test_a_webhook_denial_shows_the_webhooks_own_message(tmp_path):
    denial = webhook_denied("inferenceservice.kserve-webhook-server.validator", "[cpu] is not a supported metric")
    with FakeAPIServer(isvc_answer=denial) as api:
        done = deploy_py("status", kubeconfig=api.kubeconfig(tmp_path), tmp_path=tmp_path)
    assert_clean_error(
        done,
        "InferenceService ml-serving/image-classifier was rejected by an admission webhook: admission webhook "
        '"inferenceservice.kserve-webhook-server.validator" denied the request: [cpu] is not a supported metric',
    )


def test_inferenceservice_not_found(tmp_path):
    with FakeAPIServer(isvc_answer=not_found()) as api:
        done = deploy_py("status", kubeconfig=api.kubeconfig(tmp_path), tmp_path=tmp_path)
    assert_clean_error(done, "InferenceService ml-serving/image-classifier not found: run `make deploy` first")


def test_merge_patches_use_the_same_field_manager_as_server_side_apply(tmp_path):
    from .scenes import KnativeStory

    story = KnativeStory()
    story.patch({"spec": {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": "s3://m/v2"}}}})
    story.knative_creates_revision()
    story.revision_ready()
    with FakeAPIServer(isvc_answer=(200, story.moment()[0])) as api:
        deploy_py("promote", "--timeout-s", "0", kubeconfig=api.kubeconfig(tmp_path), tmp_path=tmp_path)
    patches = [path for command, path in api.requests if command == "PATCH"]
    assert patches and all("fieldManager=isvctl" in path for path in patches)
