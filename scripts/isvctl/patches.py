"""JSON merge patches (RFC 7386) for an InferenceService; None deletes a field."""

from __future__ import annotations

from typing import Any

from .errors import DeployError
from .isvc import PREVIOUS_IMAGE_ANNOTATION, PREVIOUS_STORAGE_URI_ANNOTATION, Mode, State

Patch = dict[str, Any]

SCALE_METRICS = {
    Mode.SERVERLESS: ("concurrency", "rps", "cpu", "memory"),
    Mode.STANDARD: ("cpu", "memory"),
}


def _predictor(fields: dict[str, Any], annotations: dict[str, Any] | None = None) -> Patch:
    patch: Patch = {"spec": {"predictor": fields}}
    if annotations:
        patch["metadata"] = {"annotations": annotations}
    return patch


def check_percent(percent: int) -> int:
    if not 0 <= percent <= 100:
        raise DeployError(f"canary traffic percent must be between 0 and 100, got {percent}")
    return percent


def canary(current: State, *, storage_uri: str | None, image: str | None, percent: int | None) -> Patch:
    """Start a canary: the new model (and/or image), with what to roll back to recorded alongside.

    Recording it in the same patch keeps it to one new revision (annotations reach the pod template).
    """
    if storage_uri is None and image is None:
        raise DeployError("a canary needs a new STORAGE_URI or IMAGE")
    if storage_uri == current.storage_uri and image in (None, current.image):
        raise DeployError(f"{current.name} already serves {storage_uri}; nothing to canary")
    model: dict[str, Any] = {}
    annotations: dict[str, Any] = {}
    if storage_uri is not None:
        model["storageUri"] = storage_uri
        annotations[PREVIOUS_STORAGE_URI_ANNOTATION] = current.storage_uri
    if image is not None:
        model["image"] = image
        annotations[PREVIOUS_IMAGE_ANNOTATION] = current.image
    fields: dict[str, Any] = {"model": model}
    if percent is not None:
        fields["canaryTrafficPercent"] = check_percent(percent)
    return _predictor(fields, annotations)


def traffic(percent: int) -> Patch:
    return _predictor({"canaryTrafficPercent": check_percent(percent)})


def promote() -> Patch:
    # Without canaryTrafficPercent KServe routes 100% to the latest ready revision.
    return _predictor({"canaryTrafficPercent": None})


def rollback(current: State) -> Patch:
    if current.mode.splits_traffic:
        # 0% to the canary pins all traffic on the previous rolled-out revision, which is still
        # running: instant, and no new revision is created.
        return traffic(0)
    previous_uri = current.annotations.get(PREVIOUS_STORAGE_URI_ANNOTATION)
    has_previous_image = PREVIOUS_IMAGE_ANNOTATION in current.annotations
    if previous_uri is None and not has_previous_image:
        raise DeployError(
            f"{current.namespace}/{current.name} has no recorded previous model "
            f"(annotation {PREVIOUS_STORAGE_URI_ANNOTATION}): nothing to roll back to"
        )
    model: dict[str, Any] = {}
    annotations: dict[str, Any] = {}
    if previous_uri is not None:
        model["storageUri"] = previous_uri
        annotations[PREVIOUS_STORAGE_URI_ANNOTATION] = None
    if has_previous_image:
        model["image"] = current.annotations[PREVIOUS_IMAGE_ANNOTATION] or None
        annotations[PREVIOUS_IMAGE_ANNOTATION] = None
    return _predictor({"model": model}, annotations)


def autoscale(
    *,
    mode: Mode | None,
    min_replicas: int | None,
    max_replicas: int | None,
    scale_metric: str | None,
    scale_target: int | None,
) -> Patch:
    fields: dict[str, Any] = {}
    if min_replicas is not None:
        if min_replicas < 0:
            raise DeployError(f"MIN_REPLICAS must be >= 0, got {min_replicas}")
        if min_replicas == 0 and mode is Mode.STANDARD:
            raise DeployError("MIN_REPLICAS=0 (scale to zero) needs Serverless mode")
        fields["minReplicas"] = min_replicas
    if max_replicas is not None:
        if max_replicas < 1:
            raise DeployError(f"MAX_REPLICAS must be >= 1, got {max_replicas}")
        fields["maxReplicas"] = max_replicas
    if min_replicas is not None and max_replicas is not None and min_replicas > max_replicas:
        raise DeployError(f"MIN_REPLICAS ({min_replicas}) is above MAX_REPLICAS ({max_replicas})")
    if scale_metric is not None:
        allowed = SCALE_METRICS[mode] if mode else SCALE_METRICS[Mode.SERVERLESS]
        if scale_metric not in allowed:
            where = f" in {mode.value} mode" if mode else ""
            raise DeployError(f"SCALE_METRIC must be one of {', '.join(allowed)}{where}, got {scale_metric}")
        fields["scaleMetric"] = scale_metric
    if scale_target is not None:
        if scale_target < 1:
            raise DeployError(f"SCALE_TARGET must be >= 1, got {scale_target}")
        fields["scaleTarget"] = scale_target
    if not fields:
        raise DeployError("nothing to change: set MIN_REPLICAS, MAX_REPLICAS, SCALE_METRIC or SCALE_TARGET")
    return _predictor(fields)
