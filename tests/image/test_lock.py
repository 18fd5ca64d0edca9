"""The image's locks match pyproject.toml, the source of the pins: requirements.txt (the predictor image) and
requirements-ray.txt (the Ray image: the same pins plus the `ray` extra)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ._lock import LOCK, RAY_LOCK, REPO, hashes, locked_entries, locked_versions, normalise, pyproject, requirements

SOURCE = "predictor (pyproject.toml)"
LOCKS = [LOCK, RAY_LOCK]


def _direct(lock: Path) -> dict:
    """What pyproject.toml asks of the lock: the dependencies, and for the Ray lock the `ray` extra too."""
    project = pyproject()["project"]
    extras = project["optional-dependencies"]["ray"] if lock == RAY_LOCK else []
    return requirements([*project["dependencies"], *extras])


def _named(lock: Path) -> str:
    return lock.name


def _via(body: str) -> set[str]:
    """Who asked for an entry, from its `# via` lines."""
    names = re.findall(r"#\s+(?:via\s+)?([A-Za-z0-9][\w.-]*)(?: \(pyproject\.toml\))?$", body, re.M)
    return {normalise(n) for n in names} - {"via"}


@pytest.mark.parametrize("lock", LOCKS, ids=_named)
def test_every_dependency_is_locked_at_a_version_its_specifier_allows(lock):
    locked = locked_versions(lock)
    for name, requirement in _direct(lock).items():
        assert name in locked, f"{name} is in pyproject.toml but not in {lock.name}: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (requirement, locked[name])


@pytest.mark.parametrize("lock", LOCKS, ids=_named)
def test_the_lock_asks_for_nothing_that_pyproject_no_longer_lists(lock):
    via_pyproject = {name for name, (_, body) in locked_entries(lock).items() if SOURCE in body}
    assert via_pyproject == set(_direct(lock)), f"{lock.name} is stale: run `make lock`"


@pytest.mark.parametrize("lock", LOCKS, ids=_named)
def test_every_locked_package_is_pinned_by_hash(lock):
    for name, (version, body) in locked_entries(lock).items():
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", body), f"{name}=={version} has no hash"


def test_the_ray_lock_keeps_every_pin_and_hash_of_the_main_lock():
    # The Ray image is the predictor image plus one layer: the layers they share must be what both locks say.
    main, ray = locked_entries(LOCK), locked_entries(RAY_LOCK)
    assert set(main) <= set(ray)
    for name, (version, body) in main.items():
        assert ray[name][0] == version, f"{name}: {version} in {LOCK.name}, {ray[name][0]} in {RAY_LOCK.name}"
        assert hashes(ray[name][1]) == hashes(body), f"{name} has other files in {RAY_LOCK.name}"


def test_the_ray_lock_adds_only_what_the_ray_extra_needs():
    main, ray = locked_entries(LOCK), locked_entries(RAY_LOCK)
    added = set(ray) - set(main)
    assert "ray" in added
    for name in added:
        asked_by = _via(ray[name][1])
        assert asked_by and asked_by <= added | {"predictor"}, (name, asked_by)


@pytest.mark.parametrize("lock", LOCKS, ids=_named)
def test_what_the_server_never_uses_is_left_out(lock):
    extras = pyproject()["project"]["optional-dependencies"]
    locked = set(locked_versions(lock))
    for extra in ("export", "storage-all"):  # the default model's weights; the unused storage back ends
        assert not set(requirements(extras[extra])) & locked, extra


@pytest.mark.parametrize("lock", LOCKS, ids=_named)
def test_test_tools_are_in_the_lock_only_where_a_runtime_package_needs_them(lock):
    entries = locked_entries(lock)
    dev = set(requirements(pyproject()["project"]["optional-dependencies"]["dev"])) - {"predictor"}
    for name in dev & set(entries):
        assert _via(entries[name][1]) & set(entries), f"{name} is in {lock.name} only because the tests use it"


def test_the_storage_all_extra_brings_back_exactly_what_the_lock_leaves_out():
    excluded = {
        normalise(name) for rule in pyproject()["tool"]["uv"]["exclude-dependencies"] for name in rule["dependencies"]
    }
    assert excluded == set(requirements(pyproject()["project"]["optional-dependencies"]["storage-all"]))


def _header(lock: Path) -> str:
    header = re.search(r"^#    (uv pip compile .*)$", lock.read_text(), re.M)
    assert header, f"{lock.name} has no uv header: run `make lock`"
    return header.group(1)


@pytest.mark.parametrize("lock", LOCKS, ids=_named)
def test_make_lock_is_the_command_that_wrote_the_lock(lock):
    planned = subprocess.run(
        ["make", "--no-print-directory", "-n", "lock"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    same = {"-o": "--output-file"}

    def flags(command: str) -> set[str]:
        words = command.split()
        return {same.get(word, word) for word in words if word != "--quiet" and not word.endswith("/uv")}

    recipes = [flags(line) for line in re.findall(r"uv pip compile .*", planned.replace("\\\n", " "))]
    written = flags(_header(lock))
    assert written in recipes, f"`make lock` no longer writes {lock.name} the way its header says"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("lock", LOCKS, ids=_named)
def test_resolving_pyproject_again_reproduces_the_lock(lock, tmp_path):
    # uv keeps the lock's pins as its preferences, so this changes nothing unless pyproject.toml changed.
    # It asks the package index (PyPI) for metadata: the one test here that needs the registry.
    uv = shutil.which("uv", path=str(REPO / ".venv" / "bin")) or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not installed: run `make install`")
    again = tmp_path / lock.name
    shutil.copy(lock, again)
    words = _header(lock).split()[3:]  # after `uv pip compile`
    args = [
        w for i, w in enumerate(words) if w not in ("-o", "--output-file") and words[i - 1 : i] != ["--output-file"]
    ]
    done = subprocess.run(
        [uv, "pip", "compile", *args, "--quiet", "--output-file", str(again)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr
    strip = lambda text: re.sub(r"^#.*\n", "", text, flags=re.M)  # noqa: E731 (the header names the output)
    assert strip(again.read_text()) == strip(lock.read_text()), f"{lock.name} is stale: run `make lock`"
