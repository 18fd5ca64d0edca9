"""mk/deploy.mk: documented targets on a light venv, overridable variables, DRY_RUN only when asked."""

import re
import subprocess

import pytest

from ..conftest import user_env
from .conftest import REPO_ROOT

MK = "".join((REPO_ROOT / "mk" / name).read_text() for name in ("deploy.mk", "image.mk"))
TARGETS = [
    "deploy-tools",
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
    "BAKE_TIME_S",
    "GATE_INTERVAL_S",
    "MIN_REPLICAS",
    "MAX_REPLICAS",
    "SCALE_METRIC",
    "SCALE_TARGET",
    "PROMETHEUS_URL",
    "DEPLOY_VENV",
    "KUBECTL",
]


def make_n(*args: str) -> str:
    done = subprocess.run(
        ["make", "-n", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True, env=user_env()
    )
    return done.stdout.replace("\\\n", " ")


def isvctl_line(*args: str) -> str:
    return next(line for line in make_n(*args).splitlines() if "/isvctl " in line)


def test_help_prints_sections_and_one_line_per_target():
    out = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert "\nDeployment\n" in plain
    for target in TARGETS:
        assert len(re.findall(rf"^  {target}\s+\S", plain, re.M)) == 1, target


def test_the_image_targets_live_in_the_image_makefile():
    deploy_mk = (REPO_ROOT / "mk" / "deploy.mk").read_text()
    image_mk = (REPO_ROOT / "mk" / "image.mk").read_text()
    assert not re.search(r"^(image|push):", deploy_mk, re.M)
    assert re.search(r"^image:", image_mk, re.M) and re.search(r"^push:", image_mk, re.M)


@pytest.mark.parametrize("target", [*TARGETS, "tools"])
def test_each_target_is_phony(target):
    assert f".PHONY: {target}\n{target}:" in MK


@pytest.mark.parametrize("variable", VARIABLES)
def test_variables_are_overridable(variable):
    assert re.search(rf"^{variable} \?=", MK, re.M)


@pytest.mark.parametrize("target", CLUSTER_TARGETS)
def test_cluster_targets_need_only_the_deploy_venv(target):
    line = isvctl_line(target, "DRY_RUN=1")
    assert line.lstrip().startswith(".venv-deploy/bin/isvctl ")
    assert f"\n{target}: deploy-tools ##" in MK


@pytest.mark.parametrize(
    "value, on", [("1", True), ("true", True), ("yes", True), ("0", False), ("false", False), ("", False)]
)
def test_dry_run_is_on_only_for_1_true_or_yes(capsys, value, on):
    from isvctl import cli

    assert cli.flag(value) is on
    assert f"--dry-run='{value}'" in isvctl_line("status", f"DRY_RUN={value}")


def test_variables_reach_isvctl_and_image_only_when_given():
    line = isvctl_line(
        "canary", "NAMESPACE=prod", "NAME=cats", "STORAGE_URI=s3://b/v9", "CANARY_STEPS=10,50,100", "IMAGE=r/p:2"
    )
    for expected in (
        "--namespace 'prod'",
        "--name 'cats'",
        "--storage-uri 's3://b/v9'",
        "--steps '10,50,100'",
        "--image 'r/p:2'",
    ):
        assert expected in line
    assert "--image ''" in isvctl_line("canary", "STORAGE_URI=s3://b/v9")


def test_make_test_sets_up_the_lint_tools_and_clean_removes_the_deploy_venv():
    assert re.search(r"^test: tools$", MK, re.M)
    assert "rm -rf .venv-deploy" in make_n("clean")
