"""The scripts the image build runs: the locks split into layers, and the host's pip settings handed to podman."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import user_env
from ._lock import LOCK, RAY_LOCK, locked_entries

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "image"))
import pip_config
import split_lock


def test_the_layers_hold_every_locked_package_once_with_its_hashes():
    layers = split_lock.split(LOCK.read_text())
    assert list(layers) == ["cuda", "torch", "python"]
    names = [block.split("==", 1)[0] for blocks in layers.values() for block in blocks]
    assert len(names) == len(set(names)) == len(locked_entries())
    assert {b.split("==")[0] for b in layers["torch"]} == {"torch", "torchvision", "triton"}
    assert all(b.startswith(("nvidia-", "cuda-")) for b in layers["cuda"])
    assert "".join(b for blocks in layers.values() for b in blocks).count("--hash=sha256:") == LOCK.read_text().count(
        "--hash=sha256:"
    )


def test_the_extras_layer_holds_what_the_ray_lock_adds_and_is_empty_without_extras(tmp_path):
    split_lock.main([str(LOCK), str(tmp_path / "ray"), "--extras", "ray"])
    split_lock.main([str(LOCK), str(tmp_path / "plain")])
    added = set(locked_entries(RAY_LOCK)) - set(locked_entries(LOCK))
    layer = (tmp_path / "ray" / "4-extras.txt").read_text()
    assert set(split_lock.entries(layer)) == added and "ray" in added
    assert layer.count("==") == len(added) and "--hash=sha256:" in layer
    assert (tmp_path / "plain" / "4-extras.txt").read_text() == ""
    for name in ("1-cuda.txt", "2-torch.txt", "3-python.txt"):  # the layers both images share
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "plain" / name).read_text()


def test_an_extra_lock_that_pins_a_shared_package_differently_stops_the_build():
    lock = LOCK.read_text()
    numpy = split_lock.entries(lock)["numpy"]
    other = numpy.replace(numpy.split("==", 1)[1].split()[0], "0.0.1", 1)
    with pytest.raises(ValueError, match="pins numpy unlike the main lock"):
        split_lock.extras_layer(lock, {"requirements-ray.txt": lock.replace(numpy, other)})


def test_local_paths_in_pip_settings_are_mounted_under_the_builds_home(tmp_path):
    wheels = tmp_path / "wheels"
    index = tmp_path / "mirror" / "simple"
    index.mkdir(parents=True)
    wheels.mkdir()
    settings = {
        ("global", "find-links"): str(wheels),
        ("global", "extra-index-url"): f"file://{index} https://example.org/simple",
        ("global", "default-timeout"): "180",
        ("install", "no-binary"): ":none:",
    }
    home = tmp_path / "home"
    mounts = pip_config.write_config(settings, home)
    inside = Path("/root/host") / tmp_path.relative_to("/")
    assert mounts == {wheels: inside / "wheels", index.parent: inside / "mirror"}
    written = (home / ".config" / "pip" / "pip.conf").read_text()
    assert f"find-links = {inside / 'wheels'}\n" in written
    assert f"extra-index-url = file://{inside / 'mirror' / 'simple'} https://example.org/simple\n" in written
    assert "default-timeout = 180\n" in written and "[install]\nno-binary = :none:\n" in written


def test_pip_settings_come_from_config_files_and_pip_variables_the_variables_winning(tmp_path, monkeypatch):
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nfind-links = /srv/wheels\ndefault-timeout = 5\n[install]\nno-compile = yes\n")
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "77")
    settings = pip_config.pip_settings([sys.executable, "-m", "pip"])
    assert settings[("global", "find-links")] == "/srv/wheels"
    assert settings[("global", "default-timeout")] == "77"
    assert settings[("install", "no-compile")] == "yes"


@pytest.mark.parametrize(
    ("image", "ray_image"),
    [
        ("ghcr.io/example/image-classifier-predictor:0.1.0", "ghcr.io/example/image-classifier-predictor-ray:0.1.0"),
        ("registry.example.com:5000/predictor:0.2.0", "registry.example.com:5000/predictor-ray:0.2.0"),
        ("registry.example.com:5000/predictor", "registry.example.com:5000/predictor-ray"),
    ],
)
def test_the_ray_image_is_named_after_the_predictor_image(image, ray_image):
    # Without what `make image-test` exports or passes down, which would name the images instead.
    planned = subprocess.run(
        ["make", "--no-print-directory", "-n", "push-ray", f"IMAGE={image}"],
        cwd=LOCK.parent,
        capture_output=True,
        text=True,
        check=True,
        env=user_env(),
    ).stdout
    assert planned.split()[-1] == ray_image
