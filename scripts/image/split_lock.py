"""Splits requirements.txt into the image's dependency layers, each a hash-pinned requirements file.

    python3 split_lock.py requirements.txt OUT_DIR [--extras "ray ..."]

The CUDA libraries and torch are nearly all of the image and change only with torch's version, so they get
layers of their own: a change to any other pin rebuilds and re-pushes only the small last layer, and a node
pulls the large layers in parallel. The Dockerfile copies each file before installing it, so an unchanged file
keeps its layer cached. Standard library only: it runs in the image's build stage.

Each extra named in --extras has a lock of its own beside requirements.txt (requirements-ray.txt, which
`make lock` constrains to the main lock's pins). What those locks add to the main one is written to
4-extras.txt, the one layer by which the Ray image differs from the predictor image; the file is empty
without --extras. A lock that pins a shared package differently stops the build.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

# Layer name -> the distributions it holds (normalised names, full match); the last layer takes the rest.
LAYERS: dict[str, str] = {
    "cuda": r"nvidia-.*|cuda-.*",
    "torch": r"torch|torchvision|triton",
    "python": r".*",
}

_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", re.M)


def entries(lock: str) -> dict[str, str]:
    """Normalised name -> the entry's full text (the pin, its hashes and its `# via` lines)."""
    found = list(_ENTRY.finditer(lock))
    ends = [m.start() for m in found[1:]] + [len(lock)]
    return {
        re.sub(r"[-_.]+", "-", m.group(1)).lower(): lock[m.start() : end] for m, end in zip(found, ends, strict=True)
    }


def split(lock: str) -> dict[str, list[str]]:
    layers: dict[str, list[str]] = {name: [] for name in LAYERS}
    for name, block in entries(lock).items():
        layer = next(layer for layer, pattern in LAYERS.items() if re.fullmatch(pattern, name))
        layers[layer].append(block)
    return layers


def _pins(block: str) -> str:
    """An entry without its `# via` comments: the pin and its hashes, which two locks must agree on."""
    return "\n".join(line for line in block.splitlines() if not line.strip().startswith("#")).strip()


def extras_layer(lock: str, extra_locks: dict[str, str]) -> list[str]:
    """The entries the extras' locks add to `lock`, each once. Raises ValueError where a lock pins or hashes a
    package of the main lock differently: the two images would then disagree on it."""
    base = entries(lock)
    added: dict[str, str] = {}
    for source, text in extra_locks.items():
        for name, block in entries(text).items():
            if name in base:
                if _pins(block) != _pins(base[name]):
                    raise ValueError(f"{source} pins {name} unlike the main lock: run `make lock`")
            else:
                added.setdefault(name, block)
    return list(added.values())


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lock")
    parser.add_argument("out_dir")
    parser.add_argument("--extras", default="", help="extras of pyproject.toml, separated by spaces")
    args = parser.parse_args(argv)
    lock = Path(args.lock)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, (layer, blocks) in enumerate(split(lock.read_text()).items(), start=1):
        (out / f"{i}-{layer}.txt").write_text("".join(blocks))
    extra_locks = {}
    for extra in args.extras.split():
        path = lock.with_name(f"{lock.stem}-{extra}{lock.suffix}")
        if not path.is_file():
            parser.error(f"no lock for the extra {extra!r}: {path.name} is missing")
        extra_locks[path.name] = path.read_text()
    try:
        added = extras_layer(lock.read_text(), extra_locks)
    except ValueError as e:
        parser.error(str(e))
    (out / f"{len(LAYERS) + 1}-extras.txt").write_text("".join(added))


if __name__ == "__main__":
    main(sys.argv[1:])
