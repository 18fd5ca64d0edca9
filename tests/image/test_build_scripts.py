"""The scripts the image build runs: the lock split into layers, and the host's pip settings handed to podman."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ._lock import LOCK, locked_entries

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
