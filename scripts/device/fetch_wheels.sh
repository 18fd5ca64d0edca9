#!/usr/bin/env bash
# Download the wheels of scripts/device/wheels.txt into .whl/ (git-ignored) for a device call:
#   run(command="bash scripts/device/check.sh", carry=[".whl", "models/efficientnet-lite0"], timeout_s=600)
# Needs the package registry (this machine, not the device). About 27 MB.
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP=${PIP:-.venv/bin/pip}
platforms=()
for p in manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 \
         manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
  platforms+=(--platform "$p")
done
rm -rf .whl && mkdir -p .whl
grep -v '^#' scripts/device/wheels.txt | xargs "$PIP" download -q --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi cp312 "${platforms[@]}" -d .whl
ls .whl | wc -l | xargs echo "wheels:" && du -sh .whl
