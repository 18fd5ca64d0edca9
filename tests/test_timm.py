"""timm models as data scientists bring them: `"architecture": "timm/<name>"`, weights only, with the
preprocessing of timm's pretrained config when model.json leaves it out. Small timm test models with
random weights; nothing is downloaded (the servers run with the Hugging Face hub switched off)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config

from devtools import launcher
from devtools.payloads import to_json, v2_binary_tensor, v2_body, v2_predictions
from devtools.photos import jpeg, photo
from predictor.artifact import ArtifactError, ModelSpec, read_spec
from predictor.export import export

REPO = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1"}
NUM_CLASSES = 4
LABELS = ["tabby", "cup", "rocket", "astronaut"]


def _timm_model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES).eval()


def _timm_eval_input(name: str, image: np.ndarray) -> torch.Tensor:
    """timm's own eval transform (PIL) for the model's pretrained config: the reference preprocessing."""
    config = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(name).to_dict())
    return create_transform(**config, is_training=False)(Image.fromarray(image)).unsqueeze(0)


def _probabilities(model: torch.nn.Module, batch: torch.Tensor) -> list[float]:
    with torch.no_grad():
        return torch.softmax(model(batch), dim=1)[0].tolist()


def _write_own_artifact(directory: Path, name: str, model: torch.nn.Module, fmt: str) -> Path:
    """What a data scientist writes by hand: the weights as timm saves them, and a model.json
    that names the architecture and nothing about preprocessing."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        save_file(state, str(directory / "model.safetensors"))
    else:
        torch.save(state, directory / "model.pth")
    (directory / "labels.txt").write_text("\n".join(LABELS) + "\n")
    spec = {"schema_version": 1, "format": fmt, "architecture": f"timm/{name}", "num_classes": NUM_CLASSES}
    (directory / "model.json").write_text(json.dumps(spec))
    return directory


@pytest.mark.parametrize("fmt, name", [("safetensors", "test_efficientnet"), ("state_dict", "test_vit")])
def test_a_timm_model_of_a_data_scientist_is_served_as_timm_would_preprocess(tmp_path, fmt, name):
    model = _timm_model(name)
    artifact = _write_own_artifact(tmp_path / name, name, model, fmt)
    running = launcher.start(artifact, "--max_batch_size", "4", env=OFFLINE)
    try:
        # The preprocessing the server uses is timm's pretrained config, as timm's eval transform applies it.
        config = httpx.get(f"{running.base_url}/v2/models/{running.model_name}/config", timeout=10).json()
        assert config["parameters"]["architecture"] == {"string_value": f"timm/{name}"}
        cat = photo("chelsea")
        reference = _timm_eval_input(name, cat)
        assert config["input"][2]["dims"] == list(reference.shape[1:])

        # The same tensor in: the same numbers out (the weights were loaded as they were saved).
        r = running.post_v2(*v2_binary_tensor("tensor", reference.numpy()))
        assert r.status_code == 200, r.text
        expected = dict(zip(LABELS, _probabilities(model, reference), strict=True))
        assert _by_label(r.json()) == pytest.approx(expected, abs=1e-4)

        # The photo in: the server's resize, crop and normalise agree with timm's PIL transform.
        r = running.post_v2(v2_body(jpeg("chelsea")))
        assert r.status_code == 200, r.text
        local = dict(zip(LABELS, _probabilities(model, _timm_eval_input(name, _decoded(jpeg("chelsea")))), strict=True))
        assert _by_label(r.json()) == pytest.approx(local, abs=0.02)
    finally:
        assert running.stop() == 0


def _by_label(response: dict) -> dict[str, float]:
    prediction = v2_predictions(response)[0]
    return dict(zip(prediction["class_names"], prediction["probabilities"], strict=True))


def _decoded(data: bytes) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_the_spec_fills_only_what_model_json_leaves_out():
    given = {"schema_version": 1, "format": "safetensors", "architecture": "timm/test_vit", "num_classes": 3}
    spec = ModelSpec.from_dict({**given, "crop_size": 128, "interpolation": "bilinear"})
    assert (spec.crop_size, spec.interpolation) == (128, "bilinear")
    # 160 / crop_pct 0.95, as timm's transforms_imagenet_eval floors it
    assert (spec.resize_size, spec.mean, spec.std) == (168, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@pytest.mark.parametrize(
    "architecture, fragment",
    [
        ("timm/no_such_model", "timm " + timm.__version__ + " has no model 'no_such_model'"),
        ("timm/resnet18.no_such_tag", "has no model 'resnet18.no_such_tag'"),
        ("timm/hf-hub:timm/resnet18.a1_in1k", "not a hub id"),
        ("timm/", "expected timm/<a name from timm.list_models()>"),
        ("timm/convnext_base.fb_in22k_ft_in1k_384", "crop_mode 'squash'"),
    ],
    ids=["unknown", "unknown tag", "hub id", "empty", "squash crop"],
)
def test_a_timm_architecture_the_server_cannot_build_or_preprocess_is_refused(architecture, fragment):
    with pytest.raises(ArtifactError) as info:
        ModelSpec.from_dict(
            {"schema_version": 1, "format": "safetensors", "architecture": architecture, "num_classes": 3}
        )
    assert fragment in str(info.value)
    assert "key 'architecture'" in str(info.value)


def test_squash_models_are_served_with_preprocessing_given_in_model_json():
    preprocessing = {
        "resize_size": 384,
        "crop_size": 384,
        "interpolation": "bicubic",
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
    }
    spec = ModelSpec.from_dict(
        {
            "schema_version": 1,
            "format": "safetensors",
            "architecture": "timm/convnext_base.fb_in22k_ft_in1k_384",
            "num_classes": 3,
            **preprocessing,
        }
    )
    assert spec.resize_size == 384


def test_without_the_timm_extra_the_message_says_how_to_get_it(tmp_path):
    code = (
        "import sys; sys.modules['timm'] = None\n"  # as if timm were not installed
        "from predictor.artifact import ModelSpec, ArtifactError\n"
        "try:\n"
        "    ModelSpec.from_dict({'schema_version': 1, 'format': 'safetensors', 'architecture': 'timm/test_vit',"
        " 'num_classes': 3})\n"
        "except ArtifactError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "need timm, the optional extra: pip install 'predictor[timm]'" in done.stdout, done.stdout + done.stderr


def test_export_model_script_writes_a_timm_artifact(tmp_path):
    output = tmp_path / "timm-vit"
    done = subprocess.run(
        [
            sys.executable,
            "scripts/export_model.py",
            "--arch",
            "timm/test_vit",
            "--num_classes",
            "10",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**launcher.os.environ, **OFFLINE},
    )
    assert done.returncode == 0, done.stderr
    assert "UNTRAINED" in done.stderr
    spec = read_spec(output)
    assert spec.architecture == "timm/test_vit" and spec.num_classes == 10
    reference = create_transform(
        **resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg("test_vit").to_dict()), is_training=False
    )
    assert f"Resize(size={spec.resize_size}, interpolation={spec.interpolation}" in repr(reference)
    assert f"CenterCrop(size=({spec.crop_size}, {spec.crop_size}))" in repr(reference)


def test_export_reads_timm_training_checkpoints_with_their_ema_weights(tmp_path):
    ema = _timm_model("test_efficientnet", seed=1)
    other = _timm_model("test_efficientnet", seed=2)
    checkpoint = tmp_path / "model_best.pth"
    torch.save(
        {
            "epoch": 12,
            "state_dict": {f"module.{k}": v for k, v in other.state_dict().items()},  # as DDP saves it
            "state_dict_ema": ema.state_dict(),
        },
        checkpoint,
    )
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    spec = export(
        tmp_path / "artifact",
        arch="timm/test_efficientnet",
        weights=checkpoint,
        num_classes=NUM_CLASSES,
        labels=labels,
    )
    from predictor.artifact import load_artifact

    loaded = load_artifact(tmp_path / "artifact").module
    batch = torch.rand(2, 3, spec.crop_size, spec.crop_size)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), ema(batch))


def test_the_served_request_path_is_unchanged_for_timm_tensors(tmp_path):
    """A timm artifact written by the exporter takes every input form, like any other."""
    artifact = tmp_path / "exported"
    export(artifact, arch="timm/test_efficientnet", num_classes=NUM_CLASSES, labels=LABELS)
    running = launcher.start(artifact, env=OFFLINE)
    try:
        pixels = {
            "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [64, 80, 3], "data": [0] * (64 * 80 * 3)}]
        }
        for body in (v2_body(jpeg("coffee")), pixels):
            r = httpx.post(running.v2_url, content=to_json(body), timeout=60)
            assert r.status_code == 200, r.text
    finally:
        assert running.stop() == 0
