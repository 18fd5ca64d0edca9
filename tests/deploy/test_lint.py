"""The image and the manifests pass their linters, and the Dockerfile keeps its promises."""

import re
import shutil
import subprocess

import pytest
import yaml

from .conftest import OVERLAYS, REPO_ROOT, VENV_BIN, render

CHECKOV = REPO_ROOT / ".tools" / "checkov" / "bin" / "checkov"
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
# Every skip must say why; there are none today. Format: check id -> justification.
CHECKOV_SKIPS: dict[str, str] = {}


def checkov(*args: str) -> subprocess.CompletedProcess:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} missing: run `make tools` (make test does)")
    skip = ["--skip-check", ",".join(CHECKOV_SKIPS)] if CHECKOV_SKIPS else []
    # --skip-download: no policy metadata from the network, so it runs offline and never hangs on it.
    return subprocess.run(
        [str(CHECKOV), "--skip-download", "--quiet", "--compact", "--output", "cli", *skip, *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "BC_SKIP_MAPPING": "TRUE"},
    )


def test_hadolint_passes():
    done = subprocess.run(
        [str(VENV_BIN / "hadolint"), "--failure-threshold", "info", "Dockerfile"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_checkov_passes_on_every_rendered_overlay_and_the_dockerfile(tmp_path):
    for overlay in OVERLAYS:
        (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(render(overlay)))
    shutil.copy(REPO_ROOT / "Dockerfile", tmp_path / "Dockerfile")
    done = checkov("--directory", str(tmp_path), "--framework", "kubernetes", "dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"Passed checks: [1-9]\d*, Failed checks: 0", done.stdout), done.stdout


def test_the_dockerfile_is_multi_stage_on_debian_slim():
    froms = re.findall(r"^FROM (\S+)(?: AS (\w+))?", DOCKERFILE, re.M)
    assert len(froms) >= 3
    assert re.fullmatch(r"docker\.io/library/debian:[a-z]+-slim", froms[0][0])


def test_dependencies_install_from_the_lock_before_the_source_is_copied():
    lines = DOCKERFILE.splitlines()

    def first(pattern):
        return next(i for i, line in enumerate(lines) if re.search(pattern, line))

    assert first(r"^COPY requirements.txt") < first(r"--require-hashes") < first(r"^COPY predictor/")


def test_the_final_stage_runs_as_a_high_uid_without_installer_or_model():
    final = DOCKERFILE.split("AS final", 1)[1]
    user = re.search(r"^USER (\d+):(\d+)", final, re.M)
    assert user and int(user.group(1)) >= 10000
    # pip reaches the final stage only as a build-time mount; g++ stays, for torch.compile at run time.
    assert not re.search(r"\b(python3[.\d]*-venv|python3-pip|build-essential)\b|COPY --from=pip", final)
    assert "/mnt/models" not in final and "COPY models" not in DOCKERFILE
    assert final.rstrip().endswith('ENTRYPOINT ["python", "-m", "predictor"]')


def test_the_dockerignore_admits_only_what_the_image_needs():
    lines = [
        line for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {"!requirements.txt", "!predictor/"} <= set(lines)
