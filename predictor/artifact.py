"""The model artifact: what a directory must hold to be served, and how it is loaded safely.

Artifact format
===============

An artifact is a directory (what KServe's storage initializer puts at ``/mnt/models``)
holding three files: ``model.json``, a weights file and a labels file.

``model.json`` (schema version 1; unknown keys are an error)::

    {
      "schema_version": 1,                 # required, must be 1
      "format": "safetensors",             # required: torchscript | torch_export | safetensors | state_dict
      "file": "model.safetensors",         # optional, default by format: torchscript -> model.pt,
                                           #   torch_export -> model.pt2, safetensors -> model.safetensors,
                                           #   state_dict -> model.pth
      "architecture": "efficientnet-lite0",# required for safetensors/state_dict (the network is built
                                           #   from code by this name); informational otherwise
      "num_classes": 1000,                 # required, >= 1; the network must output [batch, num_classes]
      "resize_size": 256,                  # required, > 0: shorter image side is resized to this (pixels)
      "crop_size": 224,                    # required, > 0 and <= resize_size: centre crop (pixels)
      "interpolation": "bilinear",         # required: bilinear | bicubic | nearest
      "mean": [0.498, 0.498, 0.498],       # required: per-channel mean of 0..1 RGB pixels
      "std": [0.502, 0.502, 0.502],        # required: per-channel std, each > 0
      "labels": "labels.txt",              # optional, default labels.txt
      "top_k": 5,                          # optional, default min(5, num_classes); 1..num_classes
      "sha256": "<64 hex digits>"          # optional: digest of the weights file, verified at load
    }

``file`` and ``labels`` are paths relative to the artifact directory (no absolute paths,
no ``..``).  The labels file is UTF-8 text, one class name per line, exactly
``num_classes`` non-empty lines, line *i* naming output *i*.

Weights formats, from safest to most capable:

* ``safetensors``: a state_dict in safetensors format; the network is built from
  ``architecture`` (see ``predictor.architectures``).  No code in the file.
* ``state_dict``: a state_dict saved with ``torch.save``; read with ``weights_only=True``.
* ``torchscript``: ``torch.jit.save`` of a traced/scripted module (any architecture).
* ``torch_export``: ``torch.export.save`` of an ``ExportedProgram`` (any architecture),
  exported with a dynamic batch dimension.

Loading never unpickles arbitrary objects.  ``torch.export.load`` on its own is not safe
for untrusted files (it falls back to unrestricted pickle, and parses shape expressions
with ``sympy.sympify``, which evaluates Python), so ``.pt2`` archives are vetted first:
only the members a plain exported classifier needs, symbolic expressions from an
allow-list of tokens, weights-only unpickling, and graph calls restricted to torch ops.

``load_artifact`` verifies the digest when ``sha256`` is set, loads the network on CPU
in float32 and eval mode, and runs one batch of 2 zero images at ``crop_size`` to
check the output is ``[2, num_classes]``.  Every problem is an ``ArtifactError`` whose
message names the file and what was expected versus found.

Fetching: ``fetch(storage_uri, model_dir)`` accepts a local path or ``file://`` (used
in place), or ``s3://``, ``gs://``, ``http(s)://`` (downloaded into ``model_dir`` with
KServe's storage module).  ``http(s)`` URIs must name an archive of the artifact
(``.tar.gz``, ``.tgz``, ``.tar`` or ``.zip``).  Archives are unpacked only after every
member has been checked: regular files and directories only, no absolute paths, no
``..``.  If the result is a single subdirectory holding ``model.json``, that is the artifact.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import math
import operator
import os
import re
import tarfile
import threading
import tokenize
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import torch

from predictor import architectures

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MODEL_JSON = "model.json"
FORMATS: tuple[str, ...] = ("torchscript", "torch_export", "safetensors", "state_dict")
DEFAULT_FILES: Mapping[str, str] = {
    "torchscript": "model.pt",
    "torch_export": "model.pt2",
    "safetensors": "model.safetensors",
    "state_dict": "model.pth",
}
# Formats whose file holds only tensors: the network comes from `architecture`.
WEIGHTS_ONLY_FORMATS: tuple[str, ...] = ("safetensors", "state_dict")
INTERPOLATIONS: tuple[str, ...] = ("bilinear", "bicubic", "nearest")
DEFAULT_LABELS_FILE = "labels.txt"
DEFAULT_TOP_K = 5
CHECK_BATCH_SIZE = 2

ALLOWED_STORAGE_SCHEMES: tuple[str, ...] = ("file", "s3", "gs", "http", "https")
ARCHIVE_SUFFIXES: tuple[str, ...] = (".tar.gz", ".tgz", ".tar", ".zip")

_HASH_CHUNK_BYTES = 1 << 20
_MAX_SYMPY_EXPR_CHARS = 4096


class ArtifactError(Exception):
    """The artifact is missing, malformed, unsafe or inconsistent; the message says which file and why."""


# --------------------------------------------------------------------------- model.json


@dataclass(frozen=True)
class ModelSpec:
    schema_version: int
    format: str
    file: str
    architecture: str | None
    num_classes: int
    resize_size: int
    crop_size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    labels: str
    top_k: int
    sha256: str | None

    @classmethod
    def from_dict(cls, d: Any, *, source: str = MODEL_JSON) -> ModelSpec:
        """Validate a parsed model.json strictly; any problem is an ArtifactError naming the key."""
        if not isinstance(d, Mapping):
            raise ArtifactError(f"{source}: expected a JSON object, got {_type_name(d)}")
        _reject_unknown_keys(d, source)
        schema_version = _int_field(d, "schema_version", source, minimum=1)
        if schema_version != SCHEMA_VERSION:
            raise ArtifactError(f"{source}: key 'schema_version': expected {SCHEMA_VERSION}, got {schema_version}")
        fmt = _choice_field(d, "format", source, FORMATS)
        num_classes = _int_field(d, "num_classes", source, minimum=1)
        resize_size = _int_field(d, "resize_size", source, minimum=1)
        crop_size = _int_field(d, "crop_size", source, minimum=1)
        if crop_size > resize_size:
            raise ArtifactError(f"{source}: key 'crop_size': expected <= resize_size ({resize_size}), got {crop_size}")
        top_k = _int_field(d, "top_k", source, minimum=1, default=min(DEFAULT_TOP_K, num_classes))
        if top_k > num_classes:
            raise ArtifactError(f"{source}: key 'top_k': expected 1..num_classes (1..{num_classes}), got {top_k}")
        return cls(
            schema_version=schema_version,
            format=fmt,
            file=_relative_path_field(d, "file", source, default=DEFAULT_FILES[fmt]),
            architecture=_architecture_field(d, fmt, source),
            num_classes=num_classes,
            resize_size=resize_size,
            crop_size=crop_size,
            interpolation=_choice_field(d, "interpolation", source, INTERPOLATIONS),
            mean=_float3_field(d, "mean", source, positive=False),
            std=_float3_field(d, "std", source, positive=True),
            labels=_relative_path_field(d, "labels", source, default=DEFAULT_LABELS_FILE),
            top_k=top_k,
            sha256=_sha256_field(d, source),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; optional keys that are unset (None) are left out."""
        d: dict[str, Any] = {
            "schema_version": self.schema_version,
            "format": self.format,
            "file": self.file,
            "architecture": self.architecture,
            "num_classes": self.num_classes,
            "resize_size": self.resize_size,
            "crop_size": self.crop_size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "labels": self.labels,
            "top_k": self.top_k,
            "sha256": self.sha256,
        }
        return {k: v for k, v in d.items() if v is not None}


_KNOWN_KEYS: tuple[str, ...] = tuple(ModelSpec.__dataclass_fields__)
_MISSING = object()


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _reject_unknown_keys(d: Mapping[str, Any], source: str) -> None:
    unknown = sorted(str(k) for k in d if k not in _KNOWN_KEYS)
    if unknown:
        raise ArtifactError(
            f"{source}: unknown key(s) {', '.join(repr(k) for k in unknown)}: expected only {', '.join(_KNOWN_KEYS)}"
        )


def _field(d: Mapping[str, Any], key: str, source: str, default: Any = _MISSING) -> Any:
    if key not in d:
        if default is _MISSING:
            raise ArtifactError(f"{source}: missing required key {key!r}")
        return default
    # JSON null counts as absent for optional keys, so they may be written out explicitly;
    # for a required key it falls through to the type check ("got null").
    value = d[key]
    return default if value is None and default is not _MISSING else value


def _int_field(d: Mapping[str, Any], key: str, source: str, *, minimum: int, default: Any = _MISSING) -> int:
    value = _field(d, key, source, default)
    # bool is an int subclass in Python; `true` is never a valid size.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ArtifactError(f"{source}: key {key!r}: expected an integer, got {_type_name(value)} {value!r}")
    if value < minimum:
        raise ArtifactError(f"{source}: key {key!r}: expected an integer >= {minimum}, got {value}")
    return value


def _str_field(d: Mapping[str, Any], key: str, source: str, default: Any = _MISSING) -> str:
    value = _field(d, key, source, default)
    if not isinstance(value, str) or not value:
        raise ArtifactError(f"{source}: key {key!r}: expected a non-empty string, got {_type_name(value)} {value!r}")
    return value


def _choice_field(d: Mapping[str, Any], key: str, source: str, choices: tuple[str, ...]) -> str:
    value = _str_field(d, key, source)
    if value not in choices:
        raise ArtifactError(f"{source}: key {key!r}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _relative_path_field(d: Mapping[str, Any], key: str, source: str, *, default: str) -> str:
    value = _str_field(d, key, source, default)
    # The artifact must be self-contained: no reaching for files outside its directory.
    parts = re.split(r"[\\/]", value)
    if PurePosixPath(value).is_absolute() or value.startswith("\\") or re.match(r"^[A-Za-z]:", value) or ".." in parts:
        raise ArtifactError(
            f"{source}: key {key!r}: expected a path relative to the artifact directory "
            f"(no absolute path, drive or '..'), got {value!r}"
        )
    return value


def _float3_field(d: Mapping[str, Any], key: str, source: str, *, positive: bool) -> tuple[float, float, float]:
    value = _field(d, key, source)
    expected = "3 finite numbers" + (" > 0" if positive else "")
    if not isinstance(value, list) or len(value) != 3:
        raise ArtifactError(f"{source}: key {key!r}: expected a list of {expected}, got {value!r}")
    for item in value:
        ok_type = isinstance(item, (int, float)) and not isinstance(item, bool)
        if not ok_type or not math.isfinite(item) or (positive and item <= 0):
            raise ArtifactError(f"{source}: key {key!r}: expected a list of {expected}, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _architecture_field(d: Mapping[str, Any], fmt: str, source: str) -> str | None:
    if fmt not in WEIGHTS_ONLY_FORMATS:
        # Informational for formats that carry their own graph.
        return None if d.get("architecture") is None else _str_field(d, "architecture", source)
    if d.get("architecture") is None:
        raise ArtifactError(
            f"{source}: missing required key 'architecture' (format {fmt!r} stores weights only, "
            f"the network is built from the architecture name)"
        )
    name = _str_field(d, "architecture", source)
    try:
        architectures.check_architecture(name)
    except architectures.UnknownArchitectureError as e:
        raise ArtifactError(f"{source}: key 'architecture': {e}") from e
    return name


def _sha256_field(d: Mapping[str, Any], source: str) -> str | None:
    value = d.get("sha256")
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ArtifactError(f"{source}: key 'sha256': expected 64 hex digits, got {value!r}")
    return value.lower()


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


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Artifact:
    directory: Path
    spec: ModelSpec
    labels: tuple[str, ...]
    module: torch.nn.Module  # eval mode, CPU, float32


def load_artifact(directory: str | os.PathLike[str]) -> Artifact:
    directory = Path(directory)
    spec = read_spec(directory)
    labels = read_labels(directory / spec.labels, spec.num_classes)
    weights_path = directory / spec.file
    if not weights_path.is_file():
        raise ArtifactError(
            f"{weights_path}: expected the {spec.format} weights file named by 'file' in {MODEL_JSON}, found none"
        )
    if spec.sha256 is not None:
        verify_sha256(weights_path, spec.sha256)
    module = _LOADERS[spec.format](weights_path, spec)
    module = _to_cpu_float32_eval(module)
    check_output_shape(module, spec, weights_path)
    return Artifact(directory=directory, spec=spec, labels=labels, module=module)


def read_labels(path: Path, num_classes: int) -> tuple[str, ...]:
    if not path.is_file():
        raise ArtifactError(f"{path}: expected a labels file with {num_classes} lines, found none")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: expected UTF-8 text, one class name per line: {e}") from e
    labels = tuple(line.strip() for line in lines)
    for number, label in enumerate(labels, start=1):
        if not label:
            raise ArtifactError(f"{path}: line {number}: expected a class name, got an empty line")
    if len(labels) != num_classes:
        raise ArtifactError(f"{path}: expected {num_classes} labels (num_classes in {MODEL_JSON}), found {len(labels)}")
    return labels


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    actual = file_sha256(path)
    if actual != expected.lower():
        raise ArtifactError(f"{path}: sha256 mismatch: expected {expected.lower()} (from {MODEL_JSON}), got {actual}")


def read_state_dict(path: Path, fmt: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a torch.save'd state_dict, never unpickling objects.

    `fmt` is "safetensors" or "state_dict"; None picks by suffix (.safetensors or not).
    """
    if fmt is None:
        fmt = "safetensors" if path.suffix == ".safetensors" else "state_dict"
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            # weights_only refuses any pickle global that is not a tensor or plain container.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, wrong format, refused pickle payload...
        how = "safetensors" if fmt == "safetensors" else "a torch.save'd state_dict (weights_only=True)"
        raise ArtifactError(f"{path}: cannot read as {how} (format {fmt!r}): {e}") from e
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ArtifactError(f"{path}: expected a state_dict (mapping of names to tensors), got {_type_name(state)}")
    return dict(state)


def build_with_weights(
    architecture: str, num_classes: int, state: Mapping[str, torch.Tensor], path: Path
) -> torch.nn.Module:
    try:
        model = architectures.build_model(architecture, num_classes)
    except ValueError as e:
        raise ArtifactError(f"{path}: cannot build architecture {architecture!r}: {e}") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # missing/unexpected keys, size mismatch
        raise ArtifactError(
            f"{path}: weights do not fit architecture {architecture!r} with num_classes={num_classes}: {e}"
        ) from e
    return model


def _load_weights_only(path: Path, spec: ModelSpec) -> torch.nn.Module:
    if spec.architecture is None:  # ModelSpec.from_dict requires it for these formats
        raise ArtifactError(f"{path}: format {spec.format!r} needs 'architecture' in {MODEL_JSON}")
    state = read_state_dict(path, spec.format)
    return build_with_weights(spec.architecture, spec.num_classes, state, path)


def _load_torchscript(path: Path, spec: ModelSpec) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            # torch.jit is deprecated upstream; the format is still supported, the warning is log noise.
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*is deprecated.*")
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise ArtifactError(f"{path}: cannot load as TorchScript (format 'torchscript'): {e}") from e


def _load_torch_export(path: Path, spec: ModelSpec) -> torch.nn.Module:
    _vet_pt2_archive(path)
    try:
        with _torch_load_forced_weights_only():
            module = torch.export.load(str(path)).module()
    except ArtifactError:
        raise
    except Exception as e:
        raise ArtifactError(f"{path}: cannot load as a torch.export program (format 'torch_export'): {e}") from e
    _check_graph_calls(module, path)
    return module


_LOADERS: Mapping[str, Callable[[Path, ModelSpec], torch.nn.Module]] = {
    "torchscript": _load_torchscript,
    "torch_export": _load_torch_export,
    "safetensors": _load_weights_only,
    "state_dict": _load_weights_only,
}


def _to_cpu_float32_eval(module: torch.nn.Module) -> torch.nn.Module:
    module = module.to(device="cpu", dtype=torch.float32)
    try:
        module.eval()
    except NotImplementedError:
        # torch.export modules refuse .eval(); their graph was captured in eval mode already,
        # so only the flag is set, for callers that read it.
        for sub in module.modules():
            sub.training = False
    return module


def check_output_shape(module: torch.nn.Module, spec: ModelSpec, path: Path) -> None:
    """One batch of zeros through the network: catches wrong num_classes, architecture or crop size."""
    expected = [CHECK_BATCH_SIZE, spec.num_classes]
    batch = architectures.example_input(CHECK_BATCH_SIZE, spec.crop_size)
    try:
        with torch.no_grad():
            output = module(batch)
    except Exception as e:
        raise ArtifactError(
            f"{path}: expected output {expected} for an input {list(batch.shape)}, but the forward pass failed: {e}"
        ) from e
    if not isinstance(output, torch.Tensor):
        raise ArtifactError(f"{path}: expected a logits tensor {expected}, got {_type_name(output)}")
    if list(output.shape) != expected:
        raise ArtifactError(
            f"{path}: expected output shape {expected} (batch of {CHECK_BATCH_SIZE}, num_classes in "
            f"{MODEL_JSON}), got {list(output.shape)}: wrong num_classes or architecture?"
        )
    if not output.is_floating_point() or not torch.isfinite(output).all():
        raise ArtifactError(
            f"{path}: expected finite floating-point logits, got dtype {output.dtype} with non-finite values"
        )


# --------------------------------------------------------------------------- .pt2 vetting

# One lock for the process-wide environment variable below and KServe's patched unpacker.
_GLOBAL_STATE_LOCK = threading.Lock()
_FORCE_WEIGHTS_ONLY_ENV = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


@contextlib.contextmanager
def _torch_load_forced_weights_only() -> Iterator[None]:
    # torch.export.load calls torch.load(weights_only=False) as a fallback; torch honours this
    # variable over the argument, so every torch.load inside becomes weights-only.
    with _GLOBAL_STATE_LOCK:
        previous = os.environ.get(_FORCE_WEIGHTS_ONLY_ENV)
        os.environ[_FORCE_WEIGHTS_ONLY_ENV] = "1"
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(_FORCE_WEIGHTS_ONLY_ENV, None)
            else:
                os.environ[_FORCE_WEIGHTS_ONLY_ENV] = previous


# Members of a .pt2 archive (below its root folder) that a plain exported classifier has.
# Not allowed, among others: opaque_obj_* (plain pickle.loads), custom_obj_* (TorchScript
# objects), AOTInductor shared libraries: native or pickled code.
_PT2_ALLOWED_MEMBERS = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/[\w.-]+\.json"
    r"|data/weights/(weight_\d+|[\w.-]+_weights_config\.json)"
    r"|data/constants/(tensor_\d+|[\w.-]+_constants_config\.json)"
    r"|data/sample_inputs/[\w.-]+\.pt"
    r"|extra/[\w.-]+)"
)


def _vet_pt2_archive(path: Path) -> None:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArtifactError(
            f"{path}: cannot load as a torch.export .pt2 archive (format 'torch_export'): expected a zip file: {e}"
        ) from e
    with archive:
        for name in archive.namelist():
            relative = name.split("/", 1)[1] if "/" in name else name
            if not _PT2_ALLOWED_MEMBERS.fullmatch(relative):
                raise ArtifactError(
                    f"{path}: member {name!r} is not allowed in a torch_export artifact "
                    f"(expected only weights, tensor constants and the serialized graph)"
                )
        formats = [n for n in archive.namelist() if n.endswith("/archive_format") or n == "archive_format"]
        if len(formats) != 1 or archive.read(formats[0]).strip() != b"pt2":
            raise ArtifactError(f"{path}: expected a .pt2 archive with archive_format 'pt2' (torch.export.save)")
        for name in archive.namelist():
            if re.search(r"(^|/)models/[^/]+\.json$", name):
                _vet_graph_json(path, name, archive.read(name))


def _vet_graph_json(path: Path, member: str, data: bytes) -> None:
    try:
        graph = json.loads(data)
    except ValueError as e:
        raise ArtifactError(f"{path}: member {member!r}: expected JSON: {e}") from e
    for expr in _find_expr_strings(graph):
        _vet_sympy_expression(expr, f"{path}: member {member!r}")


def _find_expr_strings(node: Any) -> Iterator[str]:
    # Shape expressions are stored under "expr_str" and parsed with sympy.sympify (eval).
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "expr_str":
                    yield value if isinstance(value, str) else repr(value)
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


_SYMPY_OPS = frozenset(
    {"(", ")", ",", "=", "+", "-", "*", "/", "//", "%", "**", "<", ">", "<=", ">=", "==", "!=", "&", "|", "~"}
)
_SYMBOL_NAME = re.compile(r"[a-z]+\d+")
_STRING_LITERAL = re.compile(r"""(['"])[A-Za-z0-9_.+-]*\1""")
_IGNORED_TOKENS = frozenset({tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER})


@functools.cache
def _sympy_class_names() -> frozenset[str]:
    import sympy
    import torch.utils._sympy.functions as torch_sympy

    names = {
        name
        for module in (sympy, torch_sympy)
        for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, sympy.Basic)
    }
    return frozenset(names | {"True", "False", "oo", "zoo", "nan"})


def _vet_sympy_expression(expr: str, where: str) -> None:
    """Allow only sympy constructors, symbol names, numbers and arithmetic: no calls to builtins."""
    refuse = f"{where}: refusing shape expression {expr[:200]!r}"
    if len(expr) > _MAX_SYMPY_EXPR_CHARS or "__" in expr:
        raise ArtifactError(f"{refuse}: expected a short sympy expression")
    allowed_names = _sympy_class_names()
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(expr).readline) if t.type not in _IGNORED_TOKENS]
    except (tokenize.TokenError, SyntaxError) as e:
        raise ArtifactError(f"{refuse}: {e}") from e
    for index, token in enumerate(tokens):
        following = tokens[index + 1].string if index + 1 < len(tokens) else ""
        if token.type == tokenize.NAME:
            # A keyword argument name (positive=True) is not evaluated; a bare name must be a
            # sympy class or a symbol like s85 (undefined names become symbols, builtins would run).
            if token.string in allowed_names or _SYMBOL_NAME.fullmatch(token.string) or following == "=":
                continue
        elif token.type == tokenize.OP and token.string in _SYMPY_OPS:
            continue
        elif token.type == tokenize.STRING and _STRING_LITERAL.fullmatch(token.string):
            continue
        raise ArtifactError(f"{refuse}: unexpected token {token.string!r}")


def _safe_python_targets() -> frozenset[Any]:
    names = (
        "getitem",
        "add",
        "sub",
        "mul",
        "truediv",
        "floordiv",
        "mod",
        "pow",
        "neg",
        "pos",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "and_",
        "or_",
        "xor",
        "not_",
        "abs",
    )
    torch_names = ("sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sum", "_assert", "_check")
    targets = {getattr(operator, n) for n in names}
    targets |= {getattr(torch, n) for n in torch_names if hasattr(torch, n)}
    return frozenset(targets)


def _check_graph_calls(module: torch.nn.Module, path: Path) -> None:
    # Deserialised call targets may be any attribute reachable from `torch`, `math` or
    # `operator` (torch.os.system included); only operators and plain arithmetic may run.
    safe_targets = _safe_python_targets()
    op_types = (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)
    for sub in module.modules():
        graph = getattr(sub, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            if node.op == "call_method":
                raise ArtifactError(
                    f"{path}: graph node {node.name!r} calls method {node.target!r}; expected only operators"
                )
            if node.op != "call_function":
                continue
            target = node.target
            is_math = getattr(target, "__module__", None) == "math" and callable(target)
            if isinstance(target, op_types) or target in safe_targets or is_math:
                continue
            raise ArtifactError(
                f"{path}: graph node {node.name!r} calls {target!r}; expected only torch operators and arithmetic"
            )


# --------------------------------------------------------------------------- fetching


def fetch(storage_uri: str | None, model_dir: str) -> Path:
    """Where the artifact for `storage_uri` is on local disk, downloading it into `model_dir` if remote."""
    if not storage_uri:
        return Path(model_dir)
    scheme = urlparse(storage_uri).scheme.lower()
    if scheme in ("", "file"):
        return _fetch_local(storage_uri, Path(model_dir))
    if scheme not in ALLOWED_STORAGE_SCHEMES:
        raise ArtifactError(
            f"storage URI {storage_uri!r}: scheme {scheme!r} is not allowed; expected a local path or one of "
            f"{', '.join(s + '://' for s in ALLOWED_STORAGE_SCHEMES)}"
        )
    if scheme in ("http", "https"):
        _check_http_uri(storage_uri)
    return _fetch_remote(storage_uri, Path(model_dir))


def _fetch_local(storage_uri: str, model_dir: Path) -> Path:
    # Same rule as KServe: strip a file:// prefix, the rest is a path.
    local = Path(storage_uri[len("file://") :] if storage_uri.startswith("file://") else storage_uri)
    if local.is_dir():
        return _artifact_root(local, storage_uri)
    if local.is_file() and _is_archive_name(local.name):
        model_dir.mkdir(parents=True, exist_ok=True)
        extract_archive(local, model_dir)
        return _artifact_root(model_dir, storage_uri)
    raise ArtifactError(
        f"storage URI {storage_uri!r}: expected an artifact directory or archive "
        f"({', '.join(ARCHIVE_SUFFIXES)}) at {local}, found none"
    )


def _check_http_uri(storage_uri: str) -> None:
    url_path = urlparse(storage_uri).path
    if url_path.endswith(".git"):
        # KServe would `git clone` such a URI; git is not an allowed source.
        raise ArtifactError(f"storage URI {storage_uri!r}: git repositories are not allowed")
    if not _is_archive_name(url_path):
        # KServe's HTTP download fetches exactly one file; an artifact has three.
        raise ArtifactError(
            f"storage URI {storage_uri!r}: expected an http(s) URI naming an archive of the artifact "
            f"directory ({', '.join(ARCHIVE_SUFFIXES)}), got path {url_path!r}"
        )


def _fetch_remote(storage_uri: str, model_dir: Path) -> Path:
    from kserve_storage import Storage

    model_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _safe_kserve_unpacking(Storage):
            downloaded = Path(Storage.download(storage_uri, str(model_dir)))
    except ArtifactError:
        raise
    except Exception as e:  # KServe raises bare Exception/RuntimeError for most failures
        raise ArtifactError(f"storage URI {storage_uri!r}: download into {model_dir} failed: {e}") from e
    # S3/GCS unpack only archives they recognise by mimetype; a lone archive left over is ours to unpack.
    entries = _visible_entries(downloaded)
    if len(entries) == 1 and entries[0].is_file() and _is_archive_name(entries[0].name):
        extract_archive(entries[0], downloaded)
        entries[0].unlink()
    return _artifact_root(downloaded, storage_uri)


@contextlib.contextmanager
def _safe_kserve_unpacking(storage: type) -> Iterator[None]:
    # KServe unpacks downloaded archives itself, and not strictly enough: zip members go
    # through zipfile.extractall (a '../x' or '/x' member is silently renamed, not refused)
    # and its tar filter="data" strips leading '/' instead of refusing.  For the duration of
    # the download its unpacker is replaced by ours, which refuses such archives outright.
    original = storage.__dict__.get("_unpack_archive_file")
    if original is None:
        logger.warning("kserve_storage.Storage has no _unpack_archive_file; archives are unpacked by ours only")
        yield
        return
    with _GLOBAL_STATE_LOCK:
        storage._unpack_archive_file = staticmethod(_kserve_unpack_replacement)
        try:
            yield
        finally:
            storage._unpack_archive_file = original


def _kserve_unpack_replacement(file_path: str, mimetype: str | None, target_dir: str | None = None) -> str:
    """Same contract as kserve's Storage._unpack_archive_file: unpack, delete the archive, return the dir."""
    archive = Path(file_path)
    target = Path(target_dir) if target_dir else archive.parent
    try:
        extract_archive(archive, target)
    finally:
        archive.unlink(missing_ok=True)
    return str(target)


def _is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _visible_entries(directory: Path) -> list[Path]:
    # Archive tools add clutter (._* AppleDouble files, __MACOSX) that is not part of an artifact.
    return sorted(p for p in directory.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX")


def _artifact_root(directory: Path, storage_uri: str) -> Path:
    if (directory / MODEL_JSON).is_file():
        return directory
    entries = _visible_entries(directory)
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / MODEL_JSON).is_file():
        return entries[0]
    raise ArtifactError(
        f"storage URI {storage_uri!r}: expected {MODEL_JSON} in {directory} or in its single "
        f"subdirectory, found {[p.name for p in entries][:10]}"
    )


def extract_archive(archive: Path, target: Path) -> None:
    """Unpack a tar (any compression) or zip into `target`, refusing it whole if any member is unsafe.

    Every member is checked before anything is written, so a refused archive leaves `target` untouched.
    """
    target.mkdir(parents=True, exist_ok=True)
    try:
        # By name first: an uncompressed tar whose last member is a zip also passes is_zipfile.
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, target)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, target)
        elif zipfile.is_zipfile(archive):
            _extract_zip(archive, target)
        else:
            raise ArtifactError(f"{archive}: expected a tar or zip archive, got neither")
    except ArtifactError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
        raise ArtifactError(f"{archive}: cannot unpack archive: {e}") from e


def _check_member_name(archive: Path, name: str) -> None:
    parts = re.split(r"[\\/]", name)
    if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise ArtifactError(
            f"{archive}: member {name!r} escapes the target directory: expected relative paths without '..'"
        )


def _extract_tar(archive: Path, target: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member_name(archive, member.name)
            if not (member.isfile() or member.isdir()):
                raise ArtifactError(
                    f"{archive}: member {member.name!r} is a link or special file: "
                    "expected only regular files and directories"
                )
        # The "data" filter re-checks each path and drops unsafe permission bits as a second line.
        tar.extractall(target, members=members, filter="data")


def _extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_member_name(archive, info.filename)
            unix_mode = info.external_attr >> 16
            if unix_mode and (unix_mode & 0o170000) not in (0, 0o100000, 0o040000):
                raise ArtifactError(
                    f"{archive}: member {info.filename!r} is a link or special file: "
                    "expected only regular files and directories"
                )
        root = target.resolve()
        for info in infos:
            destination = (target / info.filename).resolve()
            if not destination.is_relative_to(root):
                raise ArtifactError(f"{archive}: member {info.filename!r} resolves outside {target}")
        zf.extractall(target)
