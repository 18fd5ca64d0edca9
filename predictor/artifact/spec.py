"""`model.json`: the artifact's description, validated strictly.

Strict types (``true`` is not an integer, ``"1"`` is not a number), unknown keys refused,
and every problem reported at once, each naming the key and the rule it breaks.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from .. import architectures
from ..preprocess import Preprocessing, key_error

SCHEMA_VERSION = 1
MODEL_JSON = "model.json"
Format = Literal["torchscript", "safetensors", "state_dict"]
FORMATS: tuple[str, ...] = get_args(Format)
DEFAULT_FILES: Mapping[str, str] = {
    "torchscript": "model.pt",
    "safetensors": "model.safetensors",
    "state_dict": "model.pth",
}
# Formats whose file holds only tensors: the network comes from `architecture`.
WEIGHTS_ONLY_FORMATS: tuple[str, ...] = ("safetensors", "state_dict")
DEFAULT_LABELS_FILE = "labels.txt"
DEFAULT_TOP_K = 5
_RELATIVE_PATH_RULE = "a path relative to the artifact directory (no absolute path, drive or '..')"


class ArtifactError(Exception):
    """The artifact is missing, malformed, unsafe or inconsistent; the message says which file and why."""


def unsafe_path_reason(path: str) -> str | None:
    """Why `path` could reach outside the directory it is relative to, or None when it cannot.
    The one rule for every path an artifact names."""
    if not path:
        return "empty path"
    if PurePosixPath(path).is_absolute() or path.startswith("\\") or re.match(r"^[A-Za-z]:", path):
        return "absolute path or drive"
    if ".." in re.split(r"[\\/]", path):
        return "'..' component"
    return None


def _relative_path(value: str) -> str:
    reason = unsafe_path_reason(value)
    if reason is not None:
        raise PydanticCustomError("unsafe_path", reason)
    return value


def _sha256(value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise PydanticCustomError("sha256", "not 64 hex digits")
    return value.lower()


def _schema_version(value: int) -> int:
    if value != SCHEMA_VERSION:
        raise PydanticCustomError("schema_version", "unknown schema version")
    return value


RelativePath = Annotated[str, AfterValidator(_relative_path)]


class ModelSpec(Preprocessing):
    """model.json, schema version 1. Field descriptions are the rules, as error messages quote them."""

    schema_version: Annotated[int, AfterValidator(_schema_version)] = Field(
        description=f"{SCHEMA_VERSION}, the only schema version"
    )
    format: Format = Field(description=f"one of {', '.join(FORMATS)}")
    file: RelativePath = Field(
        description=f"{_RELATIVE_PATH_RULE}, naming the weights file (default by format: "
        + ", ".join(f"{fmt} -> {name}" for fmt, name in DEFAULT_FILES.items())
        + ")"
    )
    architecture: str | None = Field(
        default=None,
        min_length=1,
        description="a torchvision classification builder, efficientnet-lite0..4 or timm/<timm model name>, the "
        f"network the weights fit (required for {' and '.join(WEIGHTS_ONLY_FORMATS)}, informational otherwise)",
    )
    num_classes: int = Field(ge=1, description="an integer >= 1, the network's outputs")
    labels: RelativePath = Field(
        default=DEFAULT_LABELS_FILE,
        description=f"{_RELATIVE_PATH_RULE}, naming the labels file (default {DEFAULT_LABELS_FILE})",
    )
    top_k: int = Field(
        ge=1, description=f"an integer >= 1 and <= num_classes, the classes answered (default {DEFAULT_TOP_K})"
    )
    sha256: Annotated[str, AfterValidator(_sha256)] | None = Field(
        default=None, description="64 hex digits, the SHA-256 of the weights file, verified at load"
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        # Defaults that depend on another key. When that key is itself invalid, the spec fails
        # on it; a stand-in keeps the dependent key from being reported too.
        derived = {"file", "top_k"}
        # JSON null counts as absent for optional keys, so they may be written out explicitly;
        # for a required key it stays, and fails the type check ("got null").
        optional = derived | {name for name, field in cls.model_fields.items() if not field.is_required()}
        d = {k: v for k, v in data.items() if not (k in optional and v is None)}
        fmt, num_classes = d.get("format"), d.get("num_classes")
        d.setdefault("file", DEFAULT_FILES.get(fmt, "model") if isinstance(fmt, str) else "model")
        if not (isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 1):
            num_classes = 1
        d.setdefault("top_k", min(DEFAULT_TOP_K, num_classes))
        return _timm_preprocessing_defaults(d)

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.top_k > self.num_classes:
            raise key_error("top_k", f"1..num_classes (1..{self.num_classes})", self.top_k)
        if self.format not in WEIGHTS_ONLY_FORMATS:
            return self
        if self.architecture is None:
            raise PydanticCustomError(
                "architecture",
                "missing required key 'architecture' (format '{format}' stores weights only, "
                "the network is built from the architecture name)",
                {"format": self.format},
            )
        try:
            architectures.check_architecture(self.architecture)
        except architectures.UnknownArchitectureError as e:
            raise PydanticCustomError("architecture", "key 'architecture': {error}", {"error": str(e)}) from e
        return self

    @classmethod
    def from_dict(cls, d: Any, *, source: str = MODEL_JSON) -> ModelSpec:
        """Validate a parsed model.json; any problem is an ArtifactError naming the source and each key."""
        if not isinstance(d, Mapping):
            raise ArtifactError(f"{source}: expected a JSON object, got {_type_name(d)}")
        try:
            return cls.model_validate(d)
        except ValidationError as e:
            raise ArtifactError(f"{source}: " + "; ".join(_describe(error, d) for error in e.errors())) from e

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, identity first, preprocessing last; unset optional keys are left out."""
        data = self.model_dump(mode="json", exclude_none=True)
        return {key: data[key] for key in keys() if key in data}


def _timm_preprocessing_defaults(d: dict[str, Any]) -> dict[str, Any]:
    """A timm model's preprocessing keys, where model.json leaves them out, from timm's pretrained config."""
    architecture = d.get("architecture")
    missing = [key for key in Preprocessing.model_fields if key not in d]
    if not (isinstance(architecture, str) and architectures.is_timm(architecture) and missing):
        return d
    try:
        defaults = architectures.default_preprocessing(architecture)
    except ValueError as e:  # no timm, an unknown model, or a transform this server does not do
        raise PydanticCustomError(
            "architecture",
            "key 'architecture': {error} (and {missing} not given)",
            {"error": str(e), "missing": ", ".join(missing)},
        ) from e
    return {**d, **{key: getattr(defaults, key) for key in missing}}


def keys() -> list[str]:
    """model.json's keys, in the order it is written: identity first, preprocessing last."""
    own = [name for name in ModelSpec.model_fields if name not in Preprocessing.model_fields]
    return [*own, *Preprocessing.model_fields]


# Phrases for a value of the wrong type; any other problem quotes the key's rule.
_TYPE_PHRASES = {"int_type": "an integer", "string_type": "a non-empty string"}


def _describe(error: ErrorDetails, data: Mapping[str, Any]) -> str:
    loc = error["loc"]
    if not loc:  # a rule across keys: its message names them
        return error["msg"]
    key = str(loc[0])
    if error["type"] == "missing" and len(loc) == 1:
        return f"missing required key {key!r}"
    if error["type"] == "extra_forbidden":
        return f"unknown key {key!r}: expected only {', '.join(keys())}"
    value = data.get(key)
    if len(loc) == 1 and error["type"] in _TYPE_PHRASES:
        return f"key {key!r}: expected {_TYPE_PHRASES[error['type']]}, got {_describe_value(value)}"
    rule = ModelSpec.model_fields[key].description
    detail = f" ({error['msg']})" if error["type"] == "unsafe_path" else ""
    if key == "format" and value == "torch_export":
        detail = (
            " (torch.export .pt2 archives are not served: torch.export.load can run code from the file; "
            "export safetensors with the architecture name, or torchscript)"
        )
    return f"key {key!r}: expected {rule}, got {value!r}{detail}"


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _describe_value(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last duplicate silently; an ambiguous spec is refused instead.
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def read_spec(directory: str | os.PathLike[str]) -> ModelSpec:
    path = Path(directory) / MODEL_JSON
    if not Path(directory).is_dir():
        raise ArtifactError(f"{path}: expected an artifact directory at {directory}, found none")
    if not path.is_file():
        raise ArtifactError(f"{path}: expected {MODEL_JSON} in the artifact directory, found none")
    try:
        d = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ArtifactError(f"{path}: expected valid UTF-8 JSON: {e}") from e
    return ModelSpec.from_dict(d, source=str(path))
