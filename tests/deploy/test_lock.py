"""deploy/docker/*.lock: the images' pinned dependencies still satisfy pyproject.toml (regenerate
with `make lock`), and hold no development tools."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.locks import pins
from tests.deploy.podman import ROOT

LOCK = ROOT / "deploy" / "docker" / "requirements.lock"
FEATURES_LOCK = ROOT / "deploy" / "docker" / "requirements-features.lock"
MLFLOW_LOCK = ROOT / "deploy" / "docker" / "mlflow.lock"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
FEATURES = PROJECT["optional-dependencies"]["features"]
# The project's images and what each must satisfy: the core install, and the core install
# with the `features` extra (Feast).
IMAGE_LOCKS = [(LOCK, PROJECT["dependencies"]), (FEATURES_LOCK, PROJECT["dependencies"] + FEATURES)]
REQUIREMENTS = [
    pytest.param(lock, dependency, id=f"{lock.name}:{dependency}")
    for lock, dependencies in IMAGE_LOCKS
    for dependency in dependencies
]
LINUX_PY311 = {**default_environment(), "sys_platform": "linux", "python_version": "3.11"}


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**LINUX_PY311, "extra": e}) for e in extras or {""})


@pytest.mark.parametrize(("lock", "dependency"), REQUIREMENTS)
def test_the_lock_satisfies_each_dependency(lock: Path, dependency: str) -> None:
    requirement = Requirement(dependency)
    locked = pins(lock)
    name = canonicalize_name(requirement.name)
    assert name in locked, f"{name} is not in {lock.name}: run `make lock`"
    assert requirement.specifier.contains(locked[name], prereleases=True), (
        f"{lock.name} pins {name}=={locked[name]}, pyproject wants {requirement.specifier}: "
        "run `make lock`"
    )
    # A dependency's extras (uvicorn[standard], ...): what they add is pinned too.
    for extra_requirement in (
        metadata.requires(requirement.name) or [] if requirement.extras else []
    ):
        needed = Requirement(extra_requirement)
        if _applies(needed, set(requirement.extras)):
            assert canonicalize_name(needed.name) in locked, f"{needed} ({dependency})"


@pytest.mark.parametrize(
    ("lock", "dependencies"), IMAGE_LOCKS, ids=lambda v: getattr(v, "name", "")
)
def test_the_lock_holds_no_development_tool(lock: Path, dependencies: list[str]) -> None:
    runtime = {canonicalize_name(Requirement(d).name) for d in dependencies}
    dev = {canonicalize_name(Requirement(d).name) for d in PROJECT["optional-dependencies"]["dev"]}
    # Feast requires SQLAlchemy[mypy] at run time, which brings mypy into the features image.
    needed_by_feast = {"mypy"} if lock == FEATURES_LOCK else set()
    assert not (dev - runtime - needed_by_feast) & set(pins(lock))
    assert "sentiment-mlops" not in pins(lock) and "pip" not in pins(lock)


def test_only_the_features_lock_carries_feast_and_the_older_pins_it_needs() -> None:
    """Feast pins pandas<3 and prometheus-client<0.25 (README.md, Feature store): the
    features image has them, the serving image keeps the core install's newer ones."""
    serving, features = pins(LOCK), pins(FEATURES_LOCK)
    assert "feast" not in serving and "redis" not in serving
    assert Version(features["pandas"]) < Version("3") <= Version(serving["pandas"])
    older = Version(features["prometheus-client"]) < Version("0.25")
    assert older and Version(serving["prometheus-client"]) >= Version("0.25")
    # Every other package the two share is pinned alike unless Feast needs it older.
    differing = {n for n in serving.keys() & features.keys() if serving[n] != features[n]}
    assert differing <= {"pandas", "prometheus-client"}, differing


def test_the_mlflow_server_image_has_the_full_mlflow_at_the_projects_version() -> None:
    (skinny,) = [d for d in PROJECT["dependencies"] if d.startswith("mlflow-skinny==")]
    version = skinny.split("==")[1]
    assert pins(MLFLOW_LOCK)["mlflow"] == version
    assert pins(MLFLOW_LOCK)["mlflow-skinny"] == version
    assert "psycopg2-binary" in pins(MLFLOW_LOCK)  # its PostgreSQL store
