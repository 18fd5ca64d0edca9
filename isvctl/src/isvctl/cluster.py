"""The only module that talks to the Kubernetes API. Every failure leaves it as a DeployError."""

from __future__ import annotations

import builtins
import functools
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from .errors import DeployError

# One field manager for server-side apply and for merge patches, so `kubectl get --show-managed-fields`
# shows isvctl as the owner of every field it sets, whichever way it set it.
FIELD_MANAGER = "isvctl"

T = TypeVar("T")


class Cluster(Protocol):
    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...

    def patch(self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386); returns the object as stored."""

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply; returns the object as stored."""

    def delete(self, obj: dict[str, Any]) -> bool:
        """True when deleted, False when it was already gone."""

    # The `list` method shadows the builtin inside the class, hence `builtins.list` below it.
    def events(self, namespace: str, names: builtins.list[str], limit: int = 10) -> builtins.list[str]:
        """The latest events about the named objects, oldest first."""


# Kinds whose API is a CRD, and what installs it, for the "not installed" message.
_PROVIDERS = {
    "serving.kserve.io": "KServe 0.21.0 (its CRDs)",
    "serving.knative.dev": "Knative Serving",
    "monitoring.coreos.com": "the Prometheus Operator (monitoring.coreos.com CRDs)",
    "keda.sh": "KEDA",
    "gateway.networking.k8s.io": "the Gateway API CRDs",
}

_RESOURCE_NAMES = {
    "InferenceService": "inferenceservices",
    "ServingRuntime": "servingruntimes",
    "ClusterServingRuntime": "clusterservingruntimes",
    "NetworkPolicy": "networkpolicies",
    "PodDisruptionBudget": "poddisruptionbudgets",
}


def _resource_name(kind: str) -> str:
    return _RESOURCE_NAMES.get(kind, kind.lower() + "s")


def _message(body: str) -> str:
    try:
        return str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        return body or ""


def _api_error(
    exc: Any, *, verb: str, kind: str, api_version: str, namespace: str | None, name: str | None
) -> DeployError:
    """A `kubernetes.client.ApiException` as the one sentence `describe_api_error` makes of it."""
    message = describe_api_error(
        exc.status,
        exc.reason or "",
        exc.body or "",
        verb=verb,
        kind=kind,
        api_version=api_version,
        namespace=namespace,
        name=name,
    )
    return DeployError(message)


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
    message = _message(body)
    # The API server words every webhook denial this way, with the webhook's own reason after the
    # colon (k8s.io/apiserver pkg/admission/plugin/webhook/errors, ToStatusErr); a validating
    # webhook's denial comes back as 403 (controller-runtime's admission.Denied), like RBAC's.
    if "admission webhook" in message and "denied the request" in message:
        return f"{target} was rejected by an admission webhook: {message}"
    if status == 401:
        return "the Kubernetes API rejected the credentials (401 Unauthorized): log in again or refresh the kubeconfig"
    if status == 403:
        return (
            f"forbidden: not allowed to {verb} {resource}{where} "
            f"(RBAC; the deployer Role is in inferenceservices/components/security): {message}"
        ).rstrip(": ")
    if status == 404:
        if kind == "InferenceService" and name:
            return f"InferenceService {namespace}/{name} not found: run `make deploy` first"
        return f"{target} not found"
    if status == 409:
        return f"conflict while trying to {verb} {target}: {message or reason}"
    if status in (400, 422):
        return f"the API server rejected {target}: {message or reason}"
    return f"{verb} {target} failed: HTTP {status} {reason}: {message}".rstrip(": ")


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or exc)


class KubeCluster:
    """The real cluster, through the kubernetes client's dynamic client."""

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
        # A private discovery cache: a stale shared one would hide CRDs installed a minute ago.
        cache_file = os.path.join(tempfile.mkdtemp(prefix="isvctl-"), "discovery.json")
        try:
            self._dynamic = dynamic.DynamicClient(api_client, cache_file=cache_file)
        except urllib3.exceptions.HTTPError as exc:
            raise DeployError(f"cannot reach the Kubernetes API server at {self._host}: {_reason(exc)}") from None
        except client.ApiException as exc:
            raise _api_error(
                exc, verb="discover", kind="APIGroup", api_version="v1", namespace=None, name=None
            ) from None

    def _resource(self, api_version: str, kind: str, *, optional: bool = False) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self._dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            if optional:
                return None
            provider = _PROVIDERS.get(api_version.split("/")[0])
            hint = f": install {provider}" if provider else ""
            raise DeployError(f"the cluster does not serve {kind} ({api_version}){hint}") from None

    def _call(
        self, verb: str, api_version: str, kind: str, namespace: str | None, name: str | None, fn: Callable[[], T]
    ) -> T:
        import urllib3
        from kubernetes import client

        try:
            return fn()
        except client.ApiException as exc:
            raise _api_error(
                exc, verb=verb, kind=kind, api_version=api_version, namespace=namespace, name=name
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise DeployError(f"cannot reach the Kubernetes API server at {self._host}: {_reason(exc)}") from None

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        from kubernetes import client

        # The InferenceService must be served; the rest (Knative, KEDA, Gateway API) may be absent.
        res = self._resource(api_version, kind, optional=kind != "InferenceService")
        if res is None:
            return None

        def get_if_present() -> dict[str, Any] | None:
            try:
                return cast(dict[str, Any], res.get(name=name, namespace=namespace).to_dict())
            except client.ApiException as exc:
                if exc.status == 404 and kind != "InferenceService":
                    return None
                raise

        return self._call("get", api_version, kind, namespace, name, get_if_present)

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        res = self._resource(api_version, kind)
        listed = self._call(
            "list",
            api_version,
            kind,
            namespace,
            None,
            lambda: res.get(namespace=namespace, label_selector=label_selector),
        )
        return [item.to_dict() for item in listed.items]

    def patch(self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        res = self._resource(api_version, kind)
        return self._call(
            "patch",
            api_version,
            kind,
            namespace,
            name,
            lambda: res.patch(
                body=patch,
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
                field_manager=FIELD_MANAGER,
            ).to_dict(),
        )

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        res = self._resource(obj["apiVersion"], obj["kind"])
        return self._call(
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
            ).to_dict(),
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

    # The `list` method shadows the builtin inside the class, hence `builtins.list` below it.
    def events(self, namespace: str, names: builtins.list[str], limit: int = 10) -> builtins.list[str]:
        events_api = self._resource("v1", "Event")
        lines: list[tuple[str, str]] = []
        for name in names:
            listed = self._call(
                "list",
                "v1",
                "Event",
                namespace,
                None,
                functools.partial(events_api.get, namespace=namespace, field_selector=f"involvedObject.name={name}"),
            )
            for ev in listed.items:
                when = ev.lastTimestamp or ev.eventTime or ""
                kind = (ev.involvedObject or {}).get("kind", "").lower() or "object"
                lines.append((str(when), f"{ev.type} {ev.reason} {kind}/{name}: {ev.message}"))
        return [text for _, text in sorted(lines)[-limit:]]
