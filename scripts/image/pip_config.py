"""Hands this host's pip configuration to `podman build`, without leaving a trace of it in the image.

    python3 scripts/image/pip_config.py DIR [PIP ...]      (PIP defaults to `python3 -m pip`)

Prints `--volume` flags for the build. A host with its own index, a local wheel directory or its own CA bundle
(a proxy that re-signs TLS) then installs the image's dependencies from the same places as the host.

How: pip's effective settings (config files and PIP_* variables) are written to DIR/.config/pip/pip.conf with
every local path they name (find-links, a file:// index and the directory beside it, cert, constraint)
rewritten to /root/host/<path>. DIR is mounted over /root, the build's home, where pip finds that file as its
user config; each path is mounted read-only at /root/host/<path>. The mount points are created inside DIR on
the host, so no layer gets an empty stub of any of them (podman creates those for mount targets that are
missing from the image), and the host's files stay out of every layer.
"""

from __future__ import annotations

import ast
import configparser
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

BUILD_HOME = PurePosixPath("/root")
HOST_ROOT = BUILD_HOME / "host"
# Settings that are not pip options but describe the configuration itself.
IGNORED = {"config-file"}


def pip_settings(pip: list[str]) -> dict[tuple[str, str], str]:
    """(section, key) -> value, as pip resolves them: environment variables override config files."""
    done = subprocess.run([*pip, "config", "list"], capture_output=True, text=True)
    settings: dict[tuple[str, str], str] = {}
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        match = re.match(r"^([^=]*)\.([\w-]+)=(.*)$", line)
        if not match or match.group(2) in IGNORED:
            continue
        section = "global" if match.group(1) == ":env:" else match.group(1)
        settings[(section, match.group(2))] = ast.literal_eval(match.group(3))
    return settings


def _inside(path: Path) -> PurePosixPath:
    return HOST_ROOT / path.relative_to("/")


def rewrite(key: str, value: str, mounts: dict[Path, PurePosixPath]) -> str:
    """The value with each existing local path replaced by where the build sees it; `mounts` collects them."""
    tokens = []
    for token in value.split():
        is_url = token.startswith("file://")
        path = Path(unquote(urlparse(token).path)) if is_url else Path(token)
        if not path.is_absolute() or not path.exists():
            tokens.append(token)
            continue
        # A local index's pages link to the files beside it (../../files/...): mount its parent too.
        mounted = path.parent if is_url and key.endswith("index-url") else path
        mounts[mounted] = _inside(mounted)
        tokens.append(f"file://{_inside(path)}" if is_url else str(_inside(path)))
    return " ".join(tokens)


def write_config(settings: dict[tuple[str, str], str], home: Path) -> dict[Path, PurePosixPath]:
    mounts: dict[Path, PurePosixPath] = {}
    config = configparser.ConfigParser(interpolation=None)
    for (section, key), value in sorted(settings.items()):
        if not config.has_section(section):
            config.add_section(section)
        config.set(section, key, rewrite(key, value, mounts))
    target = home / ".config" / "pip" / "pip.conf"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w") as out:
        config.write(out)
    return mounts


def main(argv: list[str]) -> None:
    home, pip = Path(argv[0]).resolve(), argv[1:] or [sys.executable, "-m", "pip"]
    settings = pip_settings(pip)
    if not settings:
        return
    mounts = write_config(settings, home)
    flags = [f"--volume={home}:{BUILD_HOME}"]
    flags += [f"--volume={host}:{inside}:ro" for host, inside in sorted(mounts.items())]
    print(" ".join(flags))


if __name__ == "__main__":
    main(sys.argv[1:])
