"""deploy/docker/*.lock: the images' pinned dependencies still satisfy pyproject.toml (regenerate
with `make lock`), and hold no development tools."""

from __future__ import annotations

import tomllib
from importlib import metadata

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.locks import pins
from tests.deploy.podman import ROOT

LOCK = ROOT / "deploy" / "docker" / "requirements.lock"
MLFLOW_LOCK = ROOT / "deploy" / "docker" / "mlflow.lock"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LINUX_PY311 = {**default_environment(), "sys_platform": "linux", "python_version": "3.11"}


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**LINUX_PY311, "extra": e}) for e in extras or {""})


@pytest.mark.parametrize("dependency", PROJECT["dependencies"])
def test_the_lock_satisfies_each_dependency(dependency: str) -> None:
    requirement = Requirement(dependency)
    locked = pins(LOCK)
    name = canonicalize_name(requirement.name)
    assert name in locked, f"{name} is not in {LOCK.name}: run `make lock`"
    assert requirement.specifier.contains(locked[name], prereleases=True), (
        f"{LOCK.name} pins {name}=={locked[name]}, pyproject wants {requirement.specifier}: "
        "run `make lock`"
    )
    for extra_requirement in metadata.requires(requirement.name) or []:
        needed = Requirement(extra_requirement)
        if requirement.extras and _applies(needed, set(requirement.extras)):
            assert canonicalize_name(needed.name) in locked, f"{needed} ({dependency})"


def test_the_lock_holds_no_development_tool() -> None:
    runtime = {canonicalize_name(Requirement(d).name) for d in PROJECT["dependencies"]}
    dev = {canonicalize_name(Requirement(d).name) for d in PROJECT["optional-dependencies"]["dev"]}
    assert not (dev - runtime) & set(pins(LOCK))
    assert "sentiment-mlops" not in pins(LOCK) and "pip" not in pins(LOCK)


def test_the_mlflow_server_image_has_the_full_mlflow_at_the_projects_version() -> None:
    (skinny,) = [d for d in PROJECT["dependencies"] if d.startswith("mlflow-skinny==")]
    version = skinny.split("==")[1]
    assert pins(MLFLOW_LOCK)["mlflow"] == version
    assert pins(MLFLOW_LOCK)["mlflow-skinny"] == version
    assert "psycopg2-binary" in pins(MLFLOW_LOCK)  # its PostgreSQL store
