"""The Dockerfiles: hadolint at warning level and checkov (offline) find nothing, and what the
images promise (numeric non-root user, no full mlflow in the serving image) is in the file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.podman import ROOT

DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile")) + sorted(DOCKER.glob("*.Dockerfile"))


def _tool(name: str, configured: str | None = None) -> str:
    """The tool beside this Python (dev extras), else SENTIMENT_TEST_<NAME>, else PATH."""
    beside = Path(sys.executable).with_name(name)
    found = configured or (str(beside) if beside.is_file() else shutil.which(name))
    if found is None:
        pytest.skip(f"{name} not installed (make test installs it)")
    return found


def test_the_checks_below_see_both_dockerfiles() -> None:
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile", "mlflow.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing_at_warning_level(dockerfile: Path) -> None:
    hadolint = _tool("hadolint")
    done = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_checkov_fails_no_check(dockerfile: Path) -> None:
    checkov = _tool("checkov", os.environ.get("SENTIMENT_TEST_CHECKOV"))
    env = {**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"}
    options = ["--framework", "dockerfile", "--skip-download", "--compact", "--output", "json"]
    done = subprocess.run(
        [checkov, "-f", str(dockerfile), *options],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    report = json.loads(done.stdout)
    summary = report["summary"]
    failed = [c["check_id"] for c in report["results"]["failed_checks"]]
    assert done.returncode == 0 and summary["failed"] == 0, failed or done.stderr
    assert summary["passed"] > 50, summary  # the Dockerfile checks did run


def _final_stage(dockerfile: Path) -> list[str]:
    """The instructions of the last stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    start = max(i for i, line in enumerate(instructions) if line.upper().startswith("FROM "))
    return instructions[start:]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    users = [line.split()[1] for line in _final_stage(dockerfile) if line.startswith("USER ")]
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), users[-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_have_a_healthcheck_and_an_exec_form_entrypoint(dockerfile: Path) -> None:
    stage = _final_stage(dockerfile)
    assert any(line.startswith("HEALTHCHECK ") and " CMD [" in line for line in stage)
    (entrypoint,) = [line for line in stage if line.startswith("ENTRYPOINT ")]
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT "))  # exec form: PID 1 gets signals


def test_the_serving_image_installs_only_its_lock_with_mlflow_skinny() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "requirements.lock" in dockerfile and "mlflow.lock" not in dockerfile
    pins = (DOCKER / "requirements.lock").read_text().lower()
    assert re.search(r"^mlflow-skinny==", pins, re.MULTILINE)
    assert not re.search(r"^(mlflow|flask|gunicorn)==", pins, re.MULTILINE)


def test_the_build_context_leaves_out_state_tests_and_virtualenvs() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") + 1 :], "everything excluded, then only what is needed"
    allowed = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    assert allowed <= {"pyproject.toml", "README.md", "src", "configs", "deploy/docker/*.lock"}
