"""Splits requirements.txt into the image's dependency layers, each a hash-pinned requirements file.

    python3 split_lock.py requirements.txt OUT_DIR

The CUDA libraries and torch are nearly all of the image and change only with torch's version, so they get
layers of their own: a change to any other pin rebuilds and re-pushes only the small last layer, and a node
pulls the large layers in parallel. The Dockerfile copies each file before installing it, so an unchanged file
keeps its layer cached. Standard library only: it runs in the image's build stage.
"""

from __future__ import annotations

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
    starts = [m.start() for m in _ENTRY.finditer(lock)]
    blocks = [lock[a:b] for a, b in zip(starts, [*starts[1:], len(lock)], strict=True)]
    return {re.sub(r"[-_.]+", "-", _ENTRY.match(b).group(1)).lower(): b for b in blocks}


def split(lock: str) -> dict[str, list[str]]:
    layers: dict[str, list[str]] = {name: [] for name in LAYERS}
    for name, block in entries(lock).items():
        layer = next(layer for layer, pattern in LAYERS.items() if re.fullmatch(pattern, name))
        layers[layer].append(block)
    return layers


def main(lock_path: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, (layer, blocks) in enumerate(split(Path(lock_path).read_text()).items(), start=1):
        (out / f"{i}-{layer}.txt").write_text("".join(blocks))


if __name__ == "__main__":
    main(*sys.argv[1:])
