"""predictor.artifact: model.json validation, safe loading of real artifacts, fetching through KServe's storage."""

from __future__ import annotations

import functools
import http.server
import io
import json
import pickle
import re
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from devtools.artifacts import SMALL_CROP_PX, SMALL_NUM_CLASSES, copy_artifact, make_small_artifact
from predictor.artifact import (
    ALLOWED_STORAGE_SCHEMES,
    FORMATS,
    Artifact,
    ArtifactError,
    ModelSpec,
    fetch,
    load_artifact,
    read_spec,
)

VALID_SPEC = {
    "schema_version": 1,
    "format": "safetensors",
    "architecture": "mobilenet_v3_small",
    "num_classes": 10,
    "resize_size": 72,
    "crop_size": 64,
    "interpolation": "bilinear",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small real artifact per format; tests copy them before tampering."""
    root = tmp_path_factory.mktemp("golden")
    for fmt in FORMATS:
        make_small_artifact(root / fmt, fmt)
    return {fmt: root / fmt for fmt in FORMATS}


def _copy(golden: dict[str, Path], fmt: str, tmp_path: Path) -> Path:
    return copy_artifact(golden[fmt], tmp_path / fmt)


def _edit_spec(directory: Path, **changes: object) -> None:
    path = directory / "model.json"
    spec = json.loads(path.read_text())
    for key, value in changes.items():
        if value is _DELETE:
            spec.pop(key)
        else:
            spec[key] = value
    path.write_text(json.dumps(spec))


_DELETE = object()


class _CreatesMarker:
    """Unpickling this object would create `marker`: the code payload loads must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --------------------------------------------------------------------------- ModelSpec


def test_spec_defaults_and_round_trip() -> None:
    spec = ModelSpec.from_dict(VALID_SPEC)
    assert (spec.file, spec.labels, spec.top_k, spec.sha256) == ("model.safetensors", "labels.txt", 5, None)
    assert spec.mean == (0.485, 0.456, 0.406)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert "sha256" not in spec.to_dict()
    assert ModelSpec.from_dict({**VALID_SPEC, "num_classes": 3}).top_k == 3
    assert ModelSpec.from_dict({**VALID_SPEC, "format": "torchscript", "architecture": None}).file == "model.pt"
    # For a format that carries its own graph the architecture is informational: any name.
    assert (
        ModelSpec.from_dict({**VALID_SPEC, "format": "torchscript", "architecture": "custom"}).architecture == "custom"
    )
    assert ModelSpec.from_dict({**VALID_SPEC, "format": "state_dict"}).file == "model.pth"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("schema_version", 2, "expected 1"),
        ("schema_version", "1", "expected an integer"),
        ("format", "onnx", "expected one of torchscript, safetensors, state_dict"),
        ("format", "torch_export", "torch.export.load can run code from the file"),
        ("format", _DELETE, "missing required key"),
        ("num_classes", 0, ">= 1"),
        ("num_classes", True, "expected an integer"),
        ("num_classes", 10.0, "expected an integer"),
        ("resize_size", -5, ">= 1"),
        ("resize_size", None, "expected an integer"),
        ("crop_size", 100, "<= resize_size"),
        ("interpolation", "lanczos", "bilinear, bicubic, nearest"),
        ("mean", [0.5, 0.5], "3 finite numbers"),
        ("mean", ["a", 0, 0], "3 finite numbers"),
        ("std", [0.2, 0.0, 0.2], "> 0"),
        ("std", [0.2, -1, 0.2], "> 0"),
        ("std", [float("nan"), 0.2, 0.2], "finite"),
        ("top_k", 0, ">= 1"),
        ("top_k", 11, "1..num_classes"),
        ("sha256", "abc", "64 hex digits"),
        ("file", "../model.safetensors", "relative"),
        ("file", "/etc/passwd", "relative"),
        ("file", 7, "non-empty string"),
        ("file", "C:\\model.pt", "relative"),
        ("labels", "../../labels.txt", "relative"),
        ("architecture", "resnet9000", "unknown architecture"),
        ("architecture", _DELETE, "missing required key"),
        ("weights", "x.bin", "unknown key"),
    ],
)
def test_spec_validation_names_the_key(key: str, value: object, expected: str) -> None:
    d = dict(VALID_SPEC)
    if value is _DELETE:
        d.pop(key)
    else:
        d[key] = value
    with pytest.raises(ArtifactError) as info:
        ModelSpec.from_dict(d, source="x/model.json")
    message = str(info.value)
    assert message.startswith("x/model.json: ") and repr(key) in message and expected in message, message


def test_spec_must_be_an_object() -> None:
    with pytest.raises(ArtifactError, match="expected a JSON object, got list"):
        ModelSpec.from_dict([1, 2])


@pytest.mark.parametrize(
    ("text", "expected"), [("{not json", "valid UTF-8 JSON"), ('{"format": 1, "format": 2}', "duplicate key 'format'")]
)
def test_read_spec_refuses_bad_json(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "model.json").write_text(text)
    with pytest.raises(ArtifactError, match=re.escape(expected)) as info:
        read_spec(tmp_path)
    assert "model.json" in str(info.value)


# --------------------------------------------------------------------------- load_artifact


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_artifact_every_format(golden: dict[str, Path], fmt: str) -> None:
    artifact = load_artifact(golden[fmt])
    assert isinstance(artifact, Artifact) and artifact.directory == golden[fmt]
    assert artifact.labels == tuple(f"class_{i}" for i in range(10))
    assert artifact.spec.format == fmt and not artifact.module.training
    with torch.no_grad():
        assert artifact.module(torch.rand(4, 3, 64, 64)).shape == (4, 10)


def test_missing_model_json(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"model\.json: expected model\.json in the artifact directory, found none"):
        load_artifact(tmp_path)
    with pytest.raises(ArtifactError, match="expected an artifact directory"):
        load_artifact(tmp_path / "nope")


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_weights(golden: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    directory = _copy(golden, fmt, tmp_path)
    weights = directory / read_spec(directory).file
    weights.unlink()
    with pytest.raises(ArtifactError, match=rf"{re.escape(weights.name)}: expected the {fmt} weights file"):
        load_artifact(directory)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_weights(golden: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    directory = _copy(golden, fmt, tmp_path)
    _edit_spec(directory, sha256=None)  # reach the parser, not the digest check
    weights = directory / read_spec(directory).file
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=rf"{re.escape(weights.name)}: cannot") as info:
        load_artifact(directory)
    assert info.value.__cause__ is not None


def test_sha256_mismatch_names_both_digests(golden: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(golden, "safetensors", tmp_path)
    expected = "0" * 64
    _edit_spec(directory, sha256=expected)
    actual = __import__("hashlib").sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    with pytest.raises(ArtifactError, match=f"model.safetensors: sha256 mismatch: expected {expected}.*got {actual}"):
        load_artifact(directory)


@pytest.mark.parametrize("fmt", ["safetensors", "state_dict"])
def test_wrong_architecture(golden: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    directory = _copy(golden, fmt, tmp_path)
    _edit_spec(directory, architecture="resnet18")
    with pytest.raises(ArtifactError, match="do not fit architecture 'resnet18' with num_classes=10"):
        load_artifact(directory)


@pytest.mark.parametrize("fmt", FORMATS)
def test_wrong_num_classes(golden: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    directory = _copy(golden, fmt, tmp_path)
    _edit_spec(directory, num_classes=12)
    (directory / "labels.txt").write_text("".join(f"c{i}\n" for i in range(12)))
    expected = r"expected output shape \[2, 12\].*got \[2, 10\]" if fmt == "torchscript" else "size mismatch"
    with pytest.raises(ArtifactError, match=expected) as info:
        load_artifact(directory)
    assert read_spec(directory).file in str(info.value)


def test_labels_count_mismatch(golden: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(golden, "safetensors", tmp_path)
    (directory / "labels.txt").write_text("a\nb\nc\n")
    with pytest.raises(ArtifactError, match=r"labels\.txt: expected 10 labels \(num_classes in model\.json\), found 3"):
        load_artifact(directory)
    (directory / "labels.txt").unlink()
    with pytest.raises(ArtifactError, match=r"labels\.txt: expected a labels file with 10 lines, found none"):
        load_artifact(directory)


def test_empty_label_line_is_refused(golden: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(golden, "safetensors", tmp_path)
    (directory / "labels.txt").write_text("a\n\n" + "x\n" * 8)
    with pytest.raises(ArtifactError, match="line 2: expected a class name"):
        load_artifact(directory)


class _FixedSizeNet(torch.nn.Module):
    """A network that only takes the input size it was built for (flatten + linear head)."""

    def __init__(self, size: int, num_classes: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.head = torch.nn.Linear(4 * (size // 4) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).flatten(1))


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_crop_size_the_network_cannot_take(golden: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(golden, "torchscript", tmp_path)
    net = _FixedSizeNet(SMALL_CROP_PX, SMALL_NUM_CLASSES).eval()
    torch.jit.save(torch.jit.trace(net, torch.zeros(2, 3, SMALL_CROP_PX, SMALL_CROP_PX)), directory / "model.pt")
    _edit_spec(directory, sha256=None, architecture="fixed-size", crop_size=32)
    with pytest.raises(
        ArtifactError, match=r"expected output \[2, 10\] for an input \[2, 3, 32, 32\], but the forward pass failed"
    ):
        load_artifact(directory)
    _edit_spec(directory, crop_size=SMALL_CROP_PX)
    assert load_artifact(directory).spec.architecture == "fixed-size"


# --------------------------------------------------------------------------- code payloads


def test_state_dict_with_code_payload_is_refused(golden: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(golden, "state_dict", tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"features.0.0.weight": _CreatesMarker(marker)}, directory / "model.pth")
    _edit_spec(directory, sha256=None)
    with pytest.raises(
        ArtifactError, match=r"model\.pth: cannot read as a torch.save'd state_dict.*weights_only"
    ) as info:
        load_artifact(directory)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()


@pytest.mark.parametrize("how", ["plain pickle", "torch.save zip"])
def test_torchscript_file_that_is_a_pickle_is_refused(golden: dict[str, Path], tmp_path: Path, how: str) -> None:
    directory = _copy(golden, "torchscript", tmp_path)
    marker = tmp_path / "pwned"
    if how == "plain pickle":
        (directory / "model.pt").write_bytes(pickle.dumps(_CreatesMarker(marker)))
    else:
        torch.save(_CreatesMarker(marker), directory / "model.pt")
    _edit_spec(directory, sha256=None)
    with pytest.raises(ArtifactError, match=r"model\.pt: cannot load as TorchScript"):
        load_artifact(directory)
    assert not marker.exists()


def test_a_torch_export_artifact_is_refused_before_its_file_is_opened(golden: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(golden, "torchscript", tmp_path)
    marker = tmp_path / "pwned"
    (directory / "model.pt2").write_bytes(pickle.dumps(_CreatesMarker(marker)))
    _edit_spec(directory, format="torch_export", file="model.pt2", sha256=None)
    with pytest.raises(ArtifactError, match=r"key 'format'.*got 'torch_export' \(torch.export .pt2 archives are not"):
        load_artifact(directory)
    assert not marker.exists()


# --------------------------------------------------------------------------- fetch


def test_fetch_none_is_model_dir(tmp_path: Path) -> None:
    assert fetch(None, str(tmp_path)) == tmp_path


def test_fetch_local_path_and_file_uri_use_the_directory_in_place(golden: dict[str, Path], tmp_path: Path) -> None:
    source = golden["safetensors"]
    assert fetch(str(source), str(tmp_path / "unused")) == source
    assert fetch(f"file://{source}", str(tmp_path / "unused")) == source
    assert not (tmp_path / "unused").exists()
    with pytest.raises(ArtifactError, match="expected an artifact directory or archive"):
        fetch(str(tmp_path / "missing"), str(tmp_path / "unused"))


@pytest.mark.parametrize(
    "uri",
    [
        "hdfs://nn/models/x",
        "git://host/repo",
        "hf://org/model",
        "oci://r/i:1",
        "ftp://host/x.tar.gz",
        "javascript:alert(1)",
        "webhdfs://h/x",
    ],
)
def test_fetch_refuses_other_schemes(tmp_path: Path, uri: str) -> None:
    with pytest.raises(ArtifactError, match="is not allowed; expected a local path or one of") as info:
        fetch(uri, str(tmp_path))
    assert all(f"{scheme}://" in str(info.value) for scheme in ALLOWED_STORAGE_SCHEMES)


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9/model.json", "https://example.com/org/repo.git"])
def test_fetch_refuses_http_uris_that_are_not_archives(tmp_path: Path, uri: str) -> None:
    with pytest.raises(ArtifactError, match="archive|git"):
        fetch(uri, str(tmp_path))


def _tar_gz(archive: Path, directory: Path, arcname: str) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(directory, arcname=arcname)
    return archive


def _zip(archive: Path, directory: Path, arcname: str) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(directory.iterdir()):
            zf.write(path, f"{arcname}/{path.name}")
    return archive


@pytest.fixture
def http_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A directory served on 127.0.0.1 at an ephemeral port; yields (directory, base URL)."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("packer", [_tar_gz, _zip], ids=["tar.gz", "zip"])
def test_fetch_http_archive_downloads_with_kserve_and_loads(
    golden: dict[str, Path], tmp_path: Path, http_root: tuple[Path, str], packer
) -> None:
    served, base_url = http_root
    suffix = ".tar.gz" if packer is _tar_gz else ".zip"
    packer(served / f"artifact{suffix}", golden["torchscript"], "lite")
    model_dir = tmp_path / "models"
    root = fetch(f"{base_url}/artifact{suffix}", str(model_dir))
    assert root == model_dir / "lite"
    # The archive and the staging directory are gone.
    assert sorted(p.name for p in model_dir.iterdir()) == ["lite"]
    assert load_artifact(root).spec.format == "torchscript"


def _evil_tar(archive: Path, member_name: str, link_to: str | None = None) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        good = tarfile.TarInfo("artifact/model.json")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"{}"))
        evil = tarfile.TarInfo(member_name)
        if link_to is None:
            evil.size = 4
            tar.addfile(evil, io.BytesIO(b"evil"))
        else:
            evil.type, evil.linkname = tarfile.SYMTYPE, link_to
            tar.addfile(evil)
    return archive


def _evil_zip(archive: Path, member_name: str) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("artifact/model.json", "{}")
        zf.writestr(zipfile.ZipInfo(member_name), "evil")
    return archive


# KServe's unpacker refuses a tar member or link outside the target, and writes a zip's '..'
# or absolute member inside it, where it spoils the artifact's layout.
_REFUSED = r"outside the destination|is a link to an absolute path|expected model\.json at the top"


def _evil_archives(tmp_path: Path) -> list[tuple[str, Path, Path]]:
    """(description, archive, a path outside the target it tries to write)."""
    work = tmp_path / "archives"
    work.mkdir()
    outside = tmp_path / "evil"
    absolute = tmp_path / "absolute_evil"
    return [
        ("tar ..", _evil_tar(work / "dotdot.tar.gz", "../evil"), outside),
        ("tar absolute", _evil_tar(work / "abs.tar.gz", str(absolute)), absolute),
        ("tar symlink", _evil_tar(work / "link.tar.gz", "artifact/link", link_to=str(tmp_path)), outside),
        ("zip ..", _evil_zip(work / "dotdot.zip", "../evil"), outside),
        ("zip absolute", _evil_zip(work / "abs.zip", str(absolute)), absolute),
    ]


def test_a_local_archive_with_escaping_members_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    for description, archive, outside in _evil_archives(tmp_path):
        model_dir = tmp_path / "models" / archive.name.replace(".", "_")
        model_dir.mkdir(parents=True)
        (model_dir / "keep").write_text("from an earlier fetch")
        with pytest.raises(ArtifactError, match=_REFUSED) as info:
            fetch(str(archive), str(model_dir))
        assert str(archive) in str(info.value), description
        assert not outside.exists(), description
        # Nothing unpacked, nothing left over, and what was there before is untouched.
        assert [p.name for p in model_dir.iterdir()] == ["keep"], description


def test_fetch_local_archive_is_unpacked_into_model_dir(golden: dict[str, Path], tmp_path: Path) -> None:
    archive = _tar_gz(tmp_path / "a.tgz", golden["safetensors"], "m")
    root = fetch(str(archive), str(tmp_path / "models"))
    assert root == tmp_path / "models" / "m" and load_artifact(root).spec.num_classes == 10


def test_fetch_http_refuses_escaping_archives(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    served, base_url = http_root
    for description, archive, outside in _evil_archives(tmp_path):
        (served / archive.name).write_bytes(archive.read_bytes())
        model_dir = tmp_path / "models" / archive.name.replace(".", "_")
        with pytest.raises(ArtifactError, match=_REFUSED):
            fetch(f"{base_url}/{archive.name}", str(model_dir))
        assert not outside.exists(), description
        assert list(model_dir.iterdir()) == [], description  # nothing unpacked, archive removed


def test_fetching_again_replaces_the_earlier_artifact(golden: dict[str, Path], tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    fetch(str(_tar_gz(tmp_path / "a.tgz", golden["safetensors"], "m")), str(model_dir))
    root = fetch(str(_tar_gz(tmp_path / "b.tgz", golden["torchscript"], "m")), str(model_dir))
    assert root == model_dir / "m" and sorted(p.name for p in root.iterdir()) == [
        "labels.txt",
        "model.json",
        "model.pt",
    ]
    assert load_artifact(root).spec.format == "torchscript"


def test_fetch_http_not_found_is_an_artifact_error(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    _, base_url = http_root
    with pytest.raises(ArtifactError, match="download into .* failed"):
        fetch(f"{base_url}/missing.tar.gz", str(tmp_path / "models"))
