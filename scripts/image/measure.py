"""Measures the image: each layer uncompressed and gzip-compressed (as a registry push stores it), and the
installed size of each Python package. Rewrites the measured section of docs/IMAGE.md.

    python scripts/image/measure.py --engine podman --image IMAGE [--doc docs/IMAGE.md]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"
# Run inside the image: every installed distribution's files on disk, bytecode included.
PACKAGE_SIZES = """
import importlib.metadata as m, json, os
sizes = {}
for d in m.distributions():
    total = 0
    for f in d.files or []:
        p = d.locate_file(f)
        total += os.path.getsize(p) if os.path.isfile(p) else 0
        if str(f).endswith('.py'):
            c = os.path.join(os.path.dirname(p), '__pycache__')
            stem = os.path.basename(str(f))[:-3]
            if os.path.isdir(c):
                total += sum(os.path.getsize(os.path.join(c, n)) for n in os.listdir(c) if n.startswith(stem + '.'))
    sizes[d.metadata['Name']] = total
print(json.dumps(sizes))
"""


def run(*cmd: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout


def mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def layers(engine: str, image: str) -> list[dict[str, Any]]:
    """The steps that made a file-system layer, oldest first, with their uncompressed size. (Steps that only
    set metadata have size 0 and no layer.)"""
    history = json.loads(run(engine, "history", "--no-trunc", "--format", "json", image))
    return [{"step": h["CreatedBy"], "size": int(h["size"])} for h in reversed(history) if int(h["size"]) > 0]


def compressed_layers(engine: str, image: str) -> list[int]:
    """gzip sizes of the layers, oldest first, written the way a push to a registry compresses them."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        run(engine, "push", "--quiet", "--compression-format", "gzip", image, f"oci:{tmp}/layout")
        index = json.loads(Path(tmp, "layout", "index.json").read_text())
        digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.loads(Path(tmp, "layout", "blobs", "sha256", digest).read_text())
        return [layer["size"] for layer in manifest["layers"]]


def package_sizes(engine: str, image: str) -> dict[str, int]:
    out = run(engine, "run", "--rm", "--entrypoint", "python", image, "-c", PACKAGE_SIZES)
    return cast(dict[str, int], json.loads(out))


def describe(step: str) -> str:
    """A Dockerfile step as the table shows it: which lock file a pip step installs, no content hashes."""
    step = re.sub(r"^/bin/sh -c (#\(nop\) )?", "", step).strip()
    if step.startswith("--mount") and (m := re.search(r"requirements/(\d-\w+\.txt)", step)):
        return f"RUN pip install -r {m.group(1)}"
    step = re.sub(r"^(ADD|COPY) (file|dir):[0-9a-f]{64}", r"\1 \2", step)
    step = re.sub(r"\s+", " ", step)
    return (step[:80] + " …") if len(step) > 80 else step


def report(engine: str, image: str) -> str:
    total = int(run(engine, "image", "inspect", "--format", "{{.Size}}", image).strip())
    steps = layers(engine, image)
    packed = compressed_layers(engine, image)
    packages = package_sizes(engine, image)
    lines = [
        f"Image `{image}`, measured with `make image-size`.",
        "",
        f"* **Uncompressed: {mb(total)}** (what a node's disk holds).",
        f"* **Compressed: {mb(sum(packed))}** in {len(packed)} layers (gzip, what a registry stores and a node pulls).",
        "",
        "Layers, oldest first:",
        "",
        "| step | uncompressed | compressed |",
        "|---|---:|---:|",
    ]
    if len(steps) != len(packed):
        raise RuntimeError(f"{len(steps)} layers in the history but {len(packed)} in the pushed manifest")
    for step, blob in zip(steps, packed, strict=True):
        lines.append(f"| `{describe(step['step'])}` | {mb(step['size'])} | {mb(blob)} |")
    lines += ["", "Python packages over 5 MB installed (files and bytecode), largest first:", ""]
    lines += ["| package | installed |", "|---|---:|"]
    ranked = sorted(packages.items(), key=lambda kv: -kv[1])
    for name, size in ranked:
        if size >= 5e6:
            lines.append(f"| {name} | {mb(size)} |")
    small = [s for _, s in ranked if s < 5e6]
    lines.append(f"| {len(small)} others | {mb(sum(small))} |")
    lines.append(f"| **all {len(ranked)} packages** | **{mb(sum(packages.values()))}** |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default="podman")
    parser.add_argument("--image", required=True)
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "IMAGE.md")
    args = parser.parse_args()
    os.environ.setdefault("CONTAINERS_CONF", str(REPO / "scripts" / "image" / "containers.conf"))
    text = report(args.engine, args.image)
    print(text)
    doc = args.doc.read_text()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        args.doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    main()
