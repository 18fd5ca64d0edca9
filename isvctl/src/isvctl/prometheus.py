"""Instant queries against Prometheus's HTTP API (GET /api/v1/query), standard library only."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .errors import DeployError


class PrometheusAPI:
    def __init__(self, base_url: str, timeout_s: float = 10.0):
        if not base_url.startswith(("http://", "https://")):
            raise DeployError(f"PROMETHEUS_URL must be an http(s) URL, got {base_url!r}")
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s

    def query(self, promql: str) -> float | None:
        url = f"{self._base_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        try:
            with urllib.request.urlopen(url, timeout=self._timeout_s) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            # Prometheus answers a bad query with 400 and its reason in the JSON body.
            raise DeployError(f"Prometheus rejected {promql!r}: HTTP {exc.code} {_error_of(exc)}") from exc
        except (urllib.error.URLError, TimeoutError, ValueError) as exc:
            raise DeployError(f"cannot query Prometheus at {self._base_url}: {getattr(exc, 'reason', exc)}") from exc
        if body.get("status") != "success":
            raise DeployError(f"Prometheus rejected {promql!r}: {body.get('error', body)}")
        return scalar(body["data"])

    def check_reachable(self) -> None:
        """Before anything changes: the URL answers queries."""
        self.query("vector(1)")


def _error_of(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read().decode(errors="replace")).get("error", ""))
    except ValueError:
        return exc.reason or ""


def scalar(data: dict[str, Any]) -> float | None:
    """The single value of a vector or scalar result; None for no samples or NaN (0/0)."""
    if data["resultType"] == "scalar":
        raw = data["result"][1]
    elif data["result"]:
        raw = data["result"][0]["value"][1]
    else:
        return None
    value = float(raw)
    return None if math.isnan(value) else value
