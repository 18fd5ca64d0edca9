"""mk/deploy.mk: documented targets, overridable variables, DRY_RUN on every cluster target."""

import re
import subprocess

import pytest

from .conftest import REPO_ROOT

MK = "".join((REPO_ROOT / "mk" / name).read_text() for name in ("deploy.mk", "image.mk"))
TARGETS = [
    "image",
    "push",
    "render",
    "deploy",
    "canary",
    "promote",
    "rollback",
    "autoscale",
    "status",
    "predict",
    "undeploy",
]
CLUSTER_TARGETS = ["deploy", "canary", "promote", "rollback", "autoscale", "status", "predict", "undeploy"]
VARIABLES = [
    "NAMESPACE",
    "NAME",
    "IMAGE",
    "STORAGE_URI",
    "OVERLAY",
    "CANARY_PERCENT",
    "CANARY_STEPS",
    "MIN_REPLICAS",
    "MAX_REPLICAS",
    "SCALE_METRIC",
    "SCALE_TARGET",
    "KUBECTL",
]


def test_help_prints_sections_and_one_line_per_target():
    out = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert "\nDeployment\n" in plain and "\nContainer image\n" in plain
    for target in TARGETS:
        assert len(re.findall(rf"^  {target}\s+\S", plain, re.M)) == 1, target


@pytest.mark.parametrize("target", TARGETS + ["tools"])
def test_each_target_is_phony(target):
    assert f".PHONY: {target}\n{target}:" in MK


@pytest.mark.parametrize("variable", VARIABLES)
def test_variables_are_overridable(variable):
    assert re.search(rf"^{variable} \?=", MK, re.M)


@pytest.mark.parametrize("target", CLUSTER_TARGETS)
def test_cluster_targets_pass_dry_run(target):
    done = subprocess.run(
        ["make", "-n", target, "DRY_RUN=1"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert "--dry-run" in done.stdout


def test_make_test_sets_up_the_lint_tools():
    assert re.search(r"^test: tools$", MK, re.M)
