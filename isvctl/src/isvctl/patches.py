"""JSON merge patches (RFC 7386) for an InferenceService; None deletes a field.

Lists are replaced whole by a merge patch, so spec.canary is always sent complete.
"""

from __future__ import annotations

from typing import Any

from .errors import DeployError
from .isvc import PREVIOUS_IMAGE_ANNOTATION, PREVIOUS_STORAGE_URI_ANNOTATION, Canary, State

Patch = dict[str, Any]


def _predictor(fields: dict[str, Any]) -> Patch:
    return {"spec": {"predictor": fields}}


def check_percent(percent: int) -> int:
    if not 0 <= percent <= 100:
        raise DeployError(f"canary traffic percent must be between 0 and 100, got {percent}")
    return percent


def _model(storage_uri: str | None, image: str | None) -> dict[str, Any]:
    return {
        **({"storageUri": storage_uri} if storage_uri is not None else {}),
        **({"image": image} if image is not None else {}),
    }


def _remember(current: State, storage_uri: str | None, image: str | None) -> dict[str, Any]:
    """Annotations recording what to roll back to, for the fields that change."""
    remember: dict[str, Any] = {}
    if storage_uri is not None:
        remember[PREVIOUS_STORAGE_URI_ANNOTATION] = current.storage_uri
    if image is not None:
        # "" records "the runtime's image": rolling back then removes model.image.
        remember[PREVIOUS_IMAGE_ANNOTATION] = current.image or ""
    return remember


def check_new(current: State, storage_uri: str | None, image: str | None) -> None:
    if storage_uri is None and image is None:
        raise DeployError("a canary needs a new STORAGE_URI or IMAGE")
    if storage_uri in (None, current.storage_uri) and image in (None, current.image):
        raise DeployError(f"{current.name} already serves {storage_uri or image}; nothing to canary")


def replace(current: State, *, storage_uri: str | None, image: str | None, percent: int | None = None) -> Patch:
    """The new model (and/or image) in the predictor, with what to roll back to recorded beside it.

    Knative: with canaryTrafficPercent, the new revision gets that share. Standard without a
    traffic split: every replica rolls to it. One patch, so one new revision or one rollout.
    """
    check_new(current, storage_uri, image)
    fields: dict[str, Any] = {
        "model": _model(storage_uri, image),
        "annotations": _remember(current, storage_uri, image),
    }
    if percent is not None:
        fields["canaryTrafficPercent"] = check_percent(percent)
    return _predictor(fields)


def traffic(percent: int) -> Patch:
    return _predictor({"canaryTrafficPercent": check_percent(percent)})


def promote() -> Patch:
    # Without canaryTrafficPercent KServe routes 100% to the latest ready revision.
    return traffic_unset()


def traffic_unset() -> Patch:
    return _predictor({"canaryTrafficPercent": None})


def _previous_model(current: State) -> dict[str, Any]:
    if not current.has_previous:
        raise DeployError(
            f"{current.namespace}/{current.name} has no recorded previous model "
            f"(annotation {PREVIOUS_STORAGE_URI_ANNOTATION} on spec.predictor): nothing to roll back to"
        )
    model: dict[str, Any] = {}
    if current.previous_storage_uri is not None:
        model["storageUri"] = current.previous_storage_uri
    if PREVIOUS_IMAGE_ANNOTATION in current.predictor_annotations:
        model["image"] = current.previous_image or None
    return model


def restore(current: State, *, pin_traffic: bool = False) -> Patch:
    """The recorded previous model back in the spec, the record cleared. With pin_traffic (a
    Knative canary in progress): 0% to the latest revision at once, so all traffic returns to the
    rolled-out revision in the same patch that starts the previous model's new revision."""
    fields: dict[str, Any] = {
        "model": _previous_model(current),
        "annotations": {PREVIOUS_STORAGE_URI_ANNOTATION: None, PREVIOUS_IMAGE_ANNOTATION: None},
    }
    if pin_traffic:
        fields["canaryTrafficPercent"] = 0
    return _predictor(fields)


# -- Standard mode, spec.canary ----------------------------------------------------------------


def _canary_entry(current: State, canary: Canary) -> dict[str, Any]:
    # The CRD requires a model's modelFormat and (empty) container name in a canary; KServe merges
    # the rest from the stable predictor (buildCanaryPredictor).
    model = {"name": "", "modelFormat": current.model_format, **_model(canary.storage_uri, canary.image)}
    predictor: dict[str, Any] = {"name": canary.name, "model": model}
    if canary.annotations:
        predictor["annotations"] = canary.annotations
    return {"trafficPercent": check_percent(canary.percent), "predictor": predictor}


def new_canary(current: State, *, name: str, storage_uri: str | None, image: str | None, percent: int) -> Canary:
    check_new(current, storage_uri, image)
    if current.canaries:
        raise DeployError(f"{current.name} already has a canary ({current.canaries[0].name}): promote or roll back")
    # The record goes into the canary's own annotations: it reaches only the canary's pods, and
    # becomes the stable predictor's when the canary is promoted.
    remember = _remember(current, storage_uri, image)
    return Canary(name, percent, storage_uri, image, {**current.predictor_annotations, **remember})


def canaries(current: State, *entries: Canary) -> Patch:
    return {"spec": {"canary": [_canary_entry(current, c) for c in entries]}}


def promote_canary(current: State) -> Patch:
    """The canary becomes the stable predictor under its own name, so its Deployment (and pods)
    carry on and the old stable one is removed (validatePredictorNameChange allows a rename with a
    new model; reconcileCanaryDeployments deletes the orphan)."""
    (canary,) = current.canaries
    predictor: dict[str, Any] = {"name": canary.name, "model": _model(canary.storage_uri, canary.image)}
    if canary.annotations:
        predictor["annotations"] = canary.annotations
    return {"spec": {"predictor": predictor, "canary": None}}


def remove_canaries() -> Patch:
    return {"spec": {"canary": None}}
