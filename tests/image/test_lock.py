"""requirements.txt, the lock the image installs from, matches pyproject.toml, the source of the pins."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from ._lock import LOCK, REPO, locked_entries, locked_versions, normalise, pyproject, requirements

SOURCE = "predictor (pyproject.toml)"


def _direct() -> dict:
    return requirements(pyproject()["project"]["dependencies"])


def test_every_dependency_is_locked_at_a_version_its_specifier_allows():
    locked = locked_versions()
    for name, requirement in _direct().items():
        assert name in locked, f"{name} is in pyproject.toml but not in requirements.txt: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (requirement, locked[name])


def test_the_lock_asks_for_nothing_that_pyproject_no_longer_lists():
    via_pyproject = {name for name, (_, body) in locked_entries().items() if SOURCE in body}
    assert via_pyproject == set(_direct()), "requirements.txt is stale: run `make lock`"


def test_every_locked_package_is_pinned_by_hash():
    for name, (version, body) in locked_entries().items():
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", body), f"{name}=={version} has no hash"


def test_what_the_server_never_uses_is_left_out():
    project = pyproject()
    extras = project["project"]["optional-dependencies"]
    locked = set(locked_versions())
    for extra in ("export", "storage-all"):  # the default model's weights; the unused storage back ends
        assert not set(requirements(extras[extra])) & locked, extra


def test_test_tools_are_in_the_lock_only_where_a_runtime_package_needs_them():
    entries = locked_entries()
    dev = set(requirements(pyproject()["project"]["optional-dependencies"]["dev"])) - {"predictor"}
    for name in dev & set(entries):
        needed_by = {normalise(n) for n in re.findall(r"#\s+(?:via\s+)?([A-Za-z0-9][\w.-]*)$", entries[name][1], re.M)}
        assert needed_by & set(entries), f"{name} is in the image only because the tests use it"


def test_the_storage_all_extra_brings_back_exactly_what_the_lock_leaves_out():
    excluded = {
        normalise(name) for rule in pyproject()["tool"]["uv"]["exclude-dependencies"] for name in rule["dependencies"]
    }
    assert excluded == set(requirements(pyproject()["project"]["optional-dependencies"]["storage-all"]))


def test_make_lock_is_the_command_that_wrote_the_lock():
    header = re.search(r"^#    (uv pip compile .*)$", LOCK.read_text(), re.M)
    planned = subprocess.run(
        ["make", "--no-print-directory", "-n", "lock"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    recipe = re.search(r"uv pip compile .*", planned.replace("\\\n", " "))
    assert header and recipe
    same = {"-o": "--output-file"}
    flags = {same.get(flag, flag) for flag in recipe.group(0).split() if flag != "--quiet"}
    assert flags == {same.get(flag, flag) for flag in header.group(1).split()}


@pytest.mark.timeout(600)
def test_resolving_pyproject_again_reproduces_the_lock(tmp_path):
    # uv keeps the lock's pins as its preferences, so this changes nothing unless pyproject.toml changed.
    # It asks the package index (PyPI) for metadata: the one test here that needs the registry.
    uv = shutil.which("uv", path=str(REPO / ".venv" / "bin")) or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not installed: run `make install`")
    again = tmp_path / "requirements.txt"
    shutil.copy(LOCK, again)
    header = re.search(r"^#    uv pip compile (.*)$", LOCK.read_text(), re.M).group(1).split()
    args = [a for a in header if a not in ("-o", "--output-file", "requirements.txt")]
    done = subprocess.run(
        [uv, "pip", "compile", *args, "--quiet", "--output-file", str(again)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr
    strip = lambda text: re.sub(r"^#.*\n", "", text, flags=re.M)  # noqa: E731 (the header names the output)
    assert strip(again.read_text()) == strip(LOCK.read_text()), "requirements.txt is stale: run `make lock`"
