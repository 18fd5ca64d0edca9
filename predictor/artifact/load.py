"""Loading an artifact: labels, digest, weights, and a forward pass that proves they fit.

Loading never unpickles arbitrary objects: safetensors holds only tensors, a state_dict is
read with ``torch.load(weights_only=True)``, and TorchScript is read by ``torch.jit.load``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import architectures
from .spec import MODEL_JSON, ArtifactError, ModelSpec, read_spec

CHECK_BATCH_SIZE = 2
_HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Artifact:
    directory: Path
    spec: ModelSpec
    labels: tuple[str, ...]
    module: torch.nn.Module  # eval mode, CPU, float32


def load_artifact(directory: str | os.PathLike[str]) -> Artifact:
    """Read, verify and load the artifact in `directory`; any problem is an ArtifactError naming the file."""
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
    module = module.to(device="cpu", dtype=torch.float32).eval()
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
        kind = "null" if state is None else type(state).__name__
        raise ArtifactError(f"{path}: expected a state_dict (mapping of names to tensors), got {kind}")
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
    if spec.architecture is None:  # ModelSpec requires it for these formats
        raise ArtifactError(f"{path}: format {spec.format!r} needs 'architecture' in {MODEL_JSON}")
    state = read_state_dict(path, spec.format)
    return build_with_weights(spec.architecture, spec.num_classes, state, path)


def _load_torchscript(path: Path, spec: ModelSpec) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            # torch.jit is deprecated upstream; the format is still supported, the warning is log noise.
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*is deprecated.*")
            module: torch.nn.Module = torch.jit.load(str(path), map_location="cpu")
            return module
    except Exception as e:
        raise ArtifactError(f"{path}: cannot load as TorchScript (format 'torchscript'): {e}") from e


_LOADERS: Mapping[str, Callable[[Path, ModelSpec], torch.nn.Module]] = {
    "torchscript": _load_torchscript,
    "safetensors": _load_weights_only,
    "state_dict": _load_weights_only,
}


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
        kind = "null" if output is None else type(output).__name__
        raise ArtifactError(f"{path}: expected a logits tensor {expected}, got {kind}")
    if list(output.shape) != expected:
        raise ArtifactError(
            f"{path}: expected output shape {expected} (batch of {CHECK_BATCH_SIZE}, num_classes in "
            f"{MODEL_JSON}), got {list(output.shape)}: wrong num_classes or architecture?"
        )
    if not output.is_floating_point() or not torch.isfinite(output).all():
        raise ArtifactError(
            f"{path}: expected finite floating-point logits, got dtype {output.dtype} with non-finite values"
        )
