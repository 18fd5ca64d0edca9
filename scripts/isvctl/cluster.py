"""The only module that talks to the Kubernetes API. Every failure leaves it as a DeployError."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Protocol

from .errors import DeployError
from .isvc import API_VERSION

FIELD_MANAGER = "isvctl"


class Cluster(Protocol):
    def get_isvc(self, namespace: str, name: str) -> dict[str, Any]: ...

    def patch_isvc(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...

    def apply(self, obj: dict[str, Any]) -> None: ...

    def delete(self, obj: dict[str, Any]) -> bool: ...

    def pod_events(self, namespace: str, isvc: str, revision: str | None, limit: int = 10) -> list[str]: ...


# Kinds whose API is a CRD, and what installs it, for the "not installed" message.
_PROVIDERS = {
    "serving.kserve.io": "KServe 0.21.0 (its CRDs)",
    "monitoring.coreos.com": "the Prometheus Operator (monitoring.coreos.com CRDs)",
    "keda.sh": "KEDA",
}

_RESOURCE_NAMES = {
    "InferenceService": "inferenceservices",
    "ServingRuntime": "servingruntimes",
    "ClusterServingRuntime": "clusterservingruntimes",
}


def _resource_name(kind: str) -> str:
    return _RESOURCE_NAMES.get(kind, kind.lower() + "s")


def describe_api_error(
    status: int,
    reason: str,
    body: str,
    *,
    verb: str,
    kind: str,
    api_version: str,
    namespace: str | None,
    name: str | None,
) -> str:
    """One sentence for an API error, naming the verb and resource we attempted."""
    group = api_version.split("/")[0] if "/" in api_version else ""
    resource = _resource_name(kind) + (f".{group}" if group else "")
    where = f" in namespace {namespace}" if namespace else ""
    target = f"{kind} {namespace + '/' if namespace else ''}{name}" if name else resource
    if status == 401:
        return "the Kubernetes API rejected the credentials (401 Unauthorized): log in again or refresh the kubeconfig"
    if status == 403:
        return (
            f"forbidden: not allowed to {verb} {resource}{where} "
            f"(RBAC; the deployer Role is in inferenceservices/components/security)"
        )
    if status == 404:
        if kind == "InferenceService" and name:
            return f"InferenceService {namespace}/{name} not found: run `make deploy` first"
        return f"{target} not found"
    if status == 409:
        return f"conflict while trying to {verb} {target}: {_message(body) or reason}"
    if status == 422:
        return f"the API server rejected {target}: {_message(body) or reason}"
    return f"{verb} {target} failed: HTTP {status} {reason}: {_message(body)}".rstrip(": ")


def _message(body: str) -> str:
    import json

    try:
        return json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        return body or ""


class KubeCluster:
    """The real cluster, through the kubernetes client's dynamic client (server-side apply)."""

    def __init__(self, context: str | None = None):
        import urllib3
        from kubernetes import client, config, dynamic
        from kubernetes.config.config_exception import ConfigException

        try:
            config.load_kube_config(context=context)
        except (ConfigException, FileNotFoundError, TypeError) as kube_exc:
            try:
                config.load_incluster_config()
            except ConfigException:
                raise DeployError(
                    "no Kubernetes configuration: set KUBECONFIG or ~/.kube/config "
                    f"(or run inside a cluster) [{kube_exc}]"
                ) from None
        api_client = client.ApiClient()
        self._host = api_client.configuration.host
        self._client = api_client
        # A private discovery cache: a stale shared one would hide CRDs installed a minute ago.
        cache_file = os.path.join(tempfile.mkdtemp(prefix="isvctl-"), "discovery.json")
        try:
            self._dynamic = dynamic.DynamicClient(api_client, cache_file=cache_file)
        except urllib3.exceptions.HTTPError as exc:
            raise DeployError(f"cannot reach the Kubernetes API server at {self._host}: {_reason(exc)}") from None
        except client.ApiException as exc:
            raise DeployError(
                describe_api_error(
                    exc.status,
                    exc.reason,
                    exc.body or "",
                    verb="discover",
                    kind="APIGroup",
                    api_version="v1",
                    namespace=None,
                    name=None,
                )
            ) from None

    def _resource(self, api_version: str, kind: str):
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self._dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            provider = _PROVIDERS.get(api_version.split("/")[0])
            hint = f": install {provider}" if provider else ""
            raise DeployError(f"the cluster does not serve {kind} ({api_version}){hint}") from None

    def _call(self, verb: str, api_version: str, kind: str, namespace: str | None, name: str | None, fn):
        import urllib3
        from kubernetes import client

        try:
            return fn()
        except client.ApiException as exc:
            raise DeployError(
                describe_api_error(
                    exc.status,
                    exc.reason or "",
                    exc.body or "",
                    verb=verb,
                    kind=kind,
                    api_version=api_version,
                    namespace=namespace,
                    name=name,
                )
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise DeployError(f"cannot reach the Kubernetes API server at {self._host}: {_reason(exc)}") from None

    def get_isvc(self, namespace: str, name: str) -> dict[str, Any]:
        res = self._resource(API_VERSION, "InferenceService")
        obj = self._call(
            "get", API_VERSION, "InferenceService", namespace, name, lambda: res.get(name=name, namespace=namespace)
        )
        return obj.to_dict()

    def patch_isvc(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        res = self._resource(API_VERSION, "InferenceService")
        obj = self._call(
            "patch",
            API_VERSION,
            "InferenceService",
            namespace,
            name,
            lambda: res.patch(body=patch, name=name, namespace=namespace, content_type="application/merge-patch+json"),
        )
        return obj.to_dict()

    def apply(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        res = self._resource(obj["apiVersion"], obj["kind"])
        self._call(
            "patch",
            obj["apiVersion"],
            obj["kind"],
            meta.get("namespace"),
            meta["name"],
            lambda: self._dynamic.server_side_apply(
                res,
                body=obj,
                name=meta["name"],
                namespace=meta.get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            ),
        )

    def delete(self, obj: dict[str, Any]) -> bool:
        from kubernetes import client

        meta = obj["metadata"]
        res = self._resource(obj["apiVersion"], obj["kind"])

        def delete_if_present() -> bool:
            try:
                res.delete(name=meta["name"], namespace=meta.get("namespace"))
                return True
            except client.ApiException as exc:
                if exc.status == 404:
                    return False
                raise

        return self._call(
            "delete", obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"], delete_if_present
        )

    def pod_events(self, namespace: str, isvc: str, revision: str | None, limit: int = 10) -> list[str]:
        selector = f"serving.kserve.io/inferenceservice={isvc}"
        if revision:
            selector += f",serving.knative.dev/revision={revision}"
        pods = self._resource("v1", "Pod")
        listed = self._call(
            "list", "v1", "Pod", namespace, None, lambda: pods.get(namespace=namespace, label_selector=selector)
        )
        events_api = self._resource("v1", "Event")
        lines: list[tuple[str, str]] = []
        for pod in listed.items:
            pod_name = pod.metadata.name
            events = self._call(
                "list",
                "v1",
                "Event",
                namespace,
                None,
                lambda name=pod_name: events_api.get(namespace=namespace, field_selector=f"involvedObject.name={name}"),
            )
            for ev in events.items:
                when = ev.lastTimestamp or ev.eventTime or ""
                lines.append((str(when), f"{ev.type} {ev.reason} pod/{pod_name}: {ev.message}"))
        return [text for _, text in sorted(lines)[-limit:]]


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)
