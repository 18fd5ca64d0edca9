"""requirements.txt (the image's lock) and pyproject.toml (its source), read for the tests."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.txt"
PYPROJECT = REPO / "pyproject.toml"
# One lock entry: the pin, its hashes, and the `# via` lines that say who asked for it.
_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s\\]+)[^\n]*(?P<body>(?:\n[ \t].*)*)", re.M)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def locked_entries() -> dict[str, tuple[str, str]]:
    """Normalised name -> (version, the entry's hash and `# via` lines)."""
    return {normalise(m["name"]): (m["version"], m["body"]) for m in _ENTRY.finditer(LOCK.read_text())}


def locked_versions() -> dict[str, str]:
    return {name: version for name, (version, _) in locked_entries().items()}


def requirements(group: list[str]) -> dict[str, Requirement]:
    return {normalise(r.name): r for r in map(Requirement, group)}
