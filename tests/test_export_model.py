"""predictor.export (`scripts/export_model.py`): real exports in every format, loaded back
through predictor.artifact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import skimage.data
import torch

from devtools.artifacts import make_small_artifact, reference_batch
from predictor import export as exporter
from predictor.artifact import FORMATS, ArtifactError, file_sha256, load_artifact, read_spec
from predictor.preprocess import Preprocessing

CAT_LABELS = {"Egyptian cat", "tabby", "tiger cat", "Persian cat", "Siamese cat", "lynx"}
COFFEE_LABELS = {"espresso", "cup", "coffee mug"}


@pytest.fixture(scope="module")
def lite0_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lite0")
    for fmt in FORMATS:
        exporter.export(root / fmt, fmt=fmt)
    return {fmt: root / fmt for fmt in FORMATS}


IMAGES = {"chelsea": skimage.data.chelsea, "coffee": skimage.data.coffee}


@pytest.fixture(scope="module")
def lite0_top5(lite0_artifacts: dict[str, Path]) -> dict[str, dict[str, list[tuple[int, str]]]]:
    """{format: {image: [(class index, label) x 5]}}, each artifact loaded once."""
    result: dict[str, dict[str, list[tuple[int, str]]]] = {}
    for fmt, directory in lite0_artifacts.items():
        artifact = load_artifact(directory)
        result[fmt] = {}
        for name, image in IMAGES.items():
            with torch.no_grad():
                logits = artifact.module(reference_batch(image(), artifact.spec))
            result[fmt][name] = [(int(i), artifact.labels[int(i)]) for i in logits[0].topk(5).indices]
    return result


def test_default_export_writes_lite0_safetensors_with_tf_preprocessing(lite0_artifacts: dict[str, Path]) -> None:
    directory = lite0_artifacts["safetensors"]
    spec = read_spec(directory)
    assert (spec.format, spec.file, spec.architecture) == ("safetensors", "model.safetensors", "efficientnet-lite0")
    assert (spec.num_classes, spec.resize_size, spec.crop_size, spec.interpolation, spec.top_k) == (
        1000,
        256,
        224,
        "bilinear",
        5,
    )
    assert spec.mean == pytest.approx((127 / 255,) * 3) and spec.std == pytest.approx((128 / 255,) * 3)
    assert spec.sha256 == file_sha256(directory / "model.safetensors")
    assert sorted(p.name for p in directory.iterdir()) == ["labels.txt", "model.json", "model.safetensors"]
    assert (directory / "labels.txt").read_text().splitlines()[285] == "Egyptian cat"


@pytest.mark.parametrize("fmt", FORMATS)
def test_lite0_recognises_chelsea_and_coffee(lite0_top5: dict, fmt: str) -> None:
    chelsea, coffee = lite0_top5[fmt]["chelsea"], lite0_top5[fmt]["coffee"]
    assert CAT_LABELS & {label for _, label in chelsea[:3]}, chelsea
    assert COFFEE_LABELS & {label for _, label in coffee[:3]}, coffee


def test_lite0_formats_agree_on_top5(lite0_top5: dict) -> None:
    for image in IMAGES:
        top5 = {fmt: [index for index, _ in by_image[image]] for fmt, by_image in lite0_top5.items()}
        assert len({tuple(indices) for indices in top5.values()}) == 1, top5


def test_torchvision_arch_exports_in_every_format_and_formats_agree(tmp_path: Path, capsys) -> None:
    arch = "mobilenet_v3_small"  # any torchvision builder works; this one is small and fast
    batch = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    outputs = {}
    for fmt in FORMATS:
        exporter.export(tmp_path / fmt, arch=arch, fmt=fmt, num_classes=1000, seed=7)
        artifact = load_artifact(tmp_path / fmt)
        assert artifact.spec.architecture == arch and len(artifact.labels) == 1000
        assert not artifact.module.training
        assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in artifact.module.parameters())
        with torch.no_grad():
            outputs[fmt] = artifact.module(batch)
    assert "UNTRAINED" in capsys.readouterr().err
    for fmt, output in outputs.items():
        assert output.shape == (3, 1000)
        torch.testing.assert_close(output, outputs["safetensors"], rtol=1e-4, atol=1e-4, msg=fmt)
        assert torch.equal(output.topk(5).indices, outputs["safetensors"].topk(5).indices)


def test_torchscript_accepts_any_batch_size(tmp_path: Path) -> None:
    make_small_artifact(tmp_path / "a", "torchscript")
    module = load_artifact(tmp_path / "a").module
    for batch_size in (1, 3, 17):
        with torch.no_grad():
            assert module(torch.rand(batch_size, 3, 64, 64)).shape == (batch_size, 10)


def test_random_init_is_deterministic_per_seed(tmp_path: Path) -> None:
    first = make_small_artifact(tmp_path / "a", seed=3)
    second = make_small_artifact(tmp_path / "b", seed=3)
    third = make_small_artifact(tmp_path / "c", seed=4)
    assert first.sha256 == second.sha256 != third.sha256


def test_weights_and_labels_files_are_used(tmp_path: Path) -> None:
    make_small_artifact(tmp_path / "src", seed=5)
    labels = tmp_path / "names.txt"
    labels.write_text("".join(f"thing {i}\n" for i in range(10)))
    spec = make_small_artifact(
        tmp_path / "out",
        "state_dict",
        weights=tmp_path / "src" / "model.safetensors",
        labels=labels,
        top_k=3,
        interpolation="bicubic",
    )
    artifact = load_artifact(tmp_path / "out")
    assert artifact.labels[9] == "thing 9" and (spec.top_k, spec.interpolation) == (3, "bicubic")
    source = load_artifact(tmp_path / "src").module
    batch = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(artifact.module(batch), source(batch))


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    make_small_artifact(tmp_path / "src")
    with pytest.raises(ArtifactError, match=r"model\.safetensors.*resnet18"):
        exporter.export(
            tmp_path / "out", arch="resnet18", num_classes=10, weights=tmp_path / "src" / "model.safetensors"
        )


def test_packaged_lite0_weights_need_1000_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1000"):
        exporter.export(tmp_path / "out", num_classes=10)
    assert not (tmp_path / "out" / "model.json").exists()


def test_labels_count_must_match(tmp_path: Path) -> None:
    labels = tmp_path / "names.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(ValueError, match="expected 10"):
        make_small_artifact(tmp_path / "out", labels=labels)


def test_bad_preprocessing_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="crop_size"):
        make_small_artifact(tmp_path / "out", crop_size=100)  # > resize 72


def test_cli_writes_artifact_and_reports_errors(tmp_path: Path, capsys) -> None:
    code = exporter.main(
        [
            "--output",
            str(tmp_path / "cli"),
            "--arch",
            "mobilenet_v3_small",
            "--num_classes",
            "4",
            "--crop_size",
            "64",
            "--resize_size",
            "64",
            "--format",
            "torchscript",
            "--top_k",
            "2",
            "--mean",
            "0.5",
            "0.5",
            "0.5",
            "--std",
            "0.25",
            "0.25",
            "0.25",
        ]
    )
    assert code == 0
    spec = json.loads((tmp_path / "cli" / "model.json").read_text())
    assert spec["format"] == "torchscript" and spec["top_k"] == 2 and spec["std"] == [0.25] * 3
    assert (tmp_path / "cli" / "labels.txt").read_text().split() == ["class_0", "class_1", "class_2", "class_3"]
    assert exporter.main(["--output", str(tmp_path / "bad"), "--arch", "resnet9000"]) == 2
    assert "unknown architecture 'resnet9000'" in capsys.readouterr().err
    assert exporter.main(["--output", str(tmp_path / "bad"), "--format", "torchscript", "--crop_size", "999"]) == 2
    assert "key 'crop_size': expected <= resize_size (256), got 999" in capsys.readouterr().err


def test_preprocessing_arguments_are_the_spec_fields(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument.*crop"):
        make_small_artifact(tmp_path / "out", crop=64)
    args = exporter.build_parser().parse_args(
        ["--output", "o", "--resize_size", "80", "--crop_size", "64", "--interpolation", "bicubic"]
        + ["--mean", "0.1", "0.2", "0.3", "--std", "1", "1", "1"]
    )
    assert {name: getattr(args, name) for name in Preprocessing.model_fields} == {
        "resize_size": 80,
        "crop_size": 64,
        "interpolation": "bicubic",
        "mean": [0.1, 0.2, 0.3],
        "std": [1.0, 1.0, 1.0],
    }


def test_the_script_is_the_module_command_line() -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "export_model.py"
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--crop_size" in result.stdout and "--format {torchscript,safetensors,state_dict}" in result.stdout
