"""One look at an InferenceService and what KServe wrote for it, read lazily and once per poll."""

from __future__ import annotations

import functools
from typing import Any

from . import isvc, workload
from .cluster import Cluster


class Observation:
    def __init__(self, cluster: Cluster, namespace: str, name: str):
        self._cluster = cluster
        self.namespace = namespace
        doc = cluster.get(isvc.API_VERSION, isvc.KIND, namespace, name)
        assert doc is not None  # the cluster raises "not found" for the InferenceService itself
        self.isvc = isvc.parse(doc)

    @functools.cache  # noqa: B019 (one Observation lives for one poll)
    def get(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        return self._cluster.get(api_version, kind, self.namespace, name)

    def deployment(self, name: str) -> workload.Deployment | None:
        doc = self.get("apps/v1", "Deployment", name)
        return workload.deployment(doc) if doc else None

    def knative_service(self, name: str) -> workload.KnativeService | None:
        doc = self.get(workload.KNATIVE_API_VERSION, "Service", name)
        return workload.knative_service(doc) if doc else None

    @functools.cached_property
    def pods(self) -> list[workload.Pod]:
        docs = self._cluster.list("v1", "Pod", self.namespace, f"{isvc.POD_LABEL}={self.isvc.name}")
        return [workload.pod(d) for d in docs]

    @functools.cached_property
    def route(self) -> dict[str, int] | None:
        """Backend -> weight of the HTTPRoute KServe writes in Standard mode with the Gateway API
        (named after the stable predictor, so it survives promotions: httproute_reconciler.go)."""
        doc = self.get(workload.HTTPROUTE_API_VERSION, "HTTPRoute", isvc.predictor_service_name(self.isvc.name))
        return workload.route_backends(doc) if doc else None
