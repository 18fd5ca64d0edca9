"""Instant queries against Prometheus's HTTP API (GET /api/v1/query)."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request

from .errors import DeployError


class PrometheusAPI:
    def __init__(self, base_url: str, timeout_s: float = 10.0):
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s

    def query(self, promql: str) -> float | None:
        url = f"{self._base_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        try:
            with urllib.request.urlopen(url, timeout=self._timeout_s) as response:
                body = json.load(response)
        except (urllib.error.URLError, TimeoutError, ValueError) as exc:
            raise DeployError(f"cannot query Prometheus at {self._base_url}: {exc}") from exc
        if body.get("status") != "success":
            raise DeployError(f"Prometheus rejected the query {promql!r}: {body.get('error', body)}")
        return scalar(body["data"])


def scalar(data: dict) -> float | None:
    """The single value of a vector or scalar result; None for no samples or NaN (0/0)."""
    if data["resultType"] == "scalar":
        raw = data["result"][1]
    elif data["result"]:
        raw = data["result"][0]["value"][1]
    else:
        return None
    value = float(raw)
    return None if math.isnan(value) else value
