""".github/workflows/ci.yml: actionlint finds nothing, every action is pinned to a commit, the
token may only read except in the job that pushes the image, and only for version tags."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
# Installed with the dev extras, beside this interpreter.
ACTIONLINT = Path(sys.executable).parent / "actionlint"


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    if not ACTIONLINT.is_file():
        pytest.fail(f"{ACTIONLINT} not found: `make install` installs the dev extras")
    return subprocess.run(
        [str(ACTIONLINT), "-no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    document = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def test_actionlint_finds_nothing() -> None:
    done = actionlint(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_does_find_a_script_injection(tmp_path: Path) -> None:
    """The checker really checks: an untrusted expression inside `run:` is reported."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: pull_request\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n",
        encoding="utf-8",
    )
    done = actionlint(bad)
    assert done.returncode == 1 and "potentially untrusted" in done.stdout


def test_every_action_is_pinned_to_a_commit(workflow: dict[str, Any]) -> None:
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]


def test_only_the_publish_job_writes_and_only_for_version_tags(workflow: dict[str, Any]) -> None:
    assert workflow["permissions"] == {"contents": "read"}
    writers = {
        name
        for name, job in workflow["jobs"].items()
        if any(value == "write" for value in job.get("permissions", {}).values())
    }
    assert writers == {"publish"}
    publish = workflow["jobs"]["publish"]
    assert publish["permissions"] == {"contents": "read", "packages": "write"}
    assert "startsWith(github.ref, 'refs/tags/v')" in publish["if"]
    assert set(publish["needs"]) == {"test", "image"}


def test_the_image_is_built_from_the_projects_dockerfile(workflow: dict[str, Any]) -> None:
    build = [step["run"] for step in workflow["jobs"]["image"]["steps"] if "run" in step]
    assert any("docker build -f deploy/docker/Dockerfile" in command for command in build)
    (push,) = [s for s in workflow["jobs"]["publish"]["steps"] if s.get("id") == "build"]
    assert push["with"]["file"] == "deploy/docker/Dockerfile" and push["with"]["push"] is True


def test_the_test_job_runs_make_test(workflow: dict[str, Any]) -> None:
    """The same entry point as here: lint, type-check, the suite, tests/deploy."""
    commands = [step.get("run", "") for step in workflow["jobs"]["test"]["steps"]]
    assert "make test" in commands
