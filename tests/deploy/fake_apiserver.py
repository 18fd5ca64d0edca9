"""A loopback stand-in for the Kubernetes API: discovery plus canned answers for one resource path.

Enough for the real kubernetes client (dynamic client, discovery) to meet a cluster without
KServe's CRDs, an RBAC denial or a missing InferenceService.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ISVC_PATH = "/apis/serving.kserve.io/v1beta1/namespaces/ml-serving/inferenceservices/image-classifier"


def _resources(group_version: str, names: list[tuple[str, str, bool]]) -> dict:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {
                "name": n,
                "singularName": n.rstrip("s"),
                "namespaced": ns,
                "kind": k,
                "verbs": ["get", "list", "watch", "create", "patch", "delete"],
            }
            for n, k, ns in names
        ],
    }


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FakeAPIServer:
    def __init__(self, *, with_kserve: bool = True, isvc_answer: tuple[int, dict] | None = None):
        routes: dict[str, tuple[int, dict]] = {
            "/version": (200, {"major": "1", "minor": "37", "gitVersion": "v1.37.0"}),
            "/api": (200, {"kind": "APIVersions", "versions": ["v1"]}),
            "/api/v1": (200, _resources("v1", [("pods", "Pod", True), ("events", "Event", True)])),
            "/apis": (200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        }
        if with_kserve:
            gv = {"groupVersion": "serving.kserve.io/v1beta1", "version": "v1beta1"}
            routes["/apis"][1]["groups"].append({"name": "serving.kserve.io", "versions": [gv], "preferredVersion": gv})
            routes["/apis/serving.kserve.io/v1beta1"] = (
                200,
                _resources("serving.kserve.io/v1beta1", [("inferenceservices", "InferenceService", True)]),
            )
        if isvc_answer:
            routes[ISVC_PATH] = isvc_answer
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                server.requests.append((self.command, self.path))
                code, body = routes.get(self.path.split("?")[0], (404, _status(404, "NotFound", "not found")))
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "ci"}}],
                    "users": [{"name": "ci", "user": {"token": "not-a-secret"}}],
                }
            )
        )
        return path


def forbidden(verb: str) -> tuple[int, dict]:
    return 403, _status(
        403,
        "Forbidden",
        f'inferenceservices.serving.kserve.io "image-classifier" is forbidden: User '
        f'"system:serviceaccount:ml-serving:ci" cannot {verb} resource "inferenceservices" in API '
        f'group "serving.kserve.io" in the namespace "ml-serving"',
    )


def not_found() -> tuple[int, dict]:
    return 404, _status(404, "NotFound", 'inferenceservices.serving.kserve.io "image-classifier" not found')


def webhook_denied(webhook: str, message: str) -> tuple[int, dict]:
    """A validating webhook's denial as the API server returns it: 403, worded by ToStatusErr."""
    return 403, _status(403, "Forbidden", f'admission webhook "{webhook}" denied the request: {message}')
