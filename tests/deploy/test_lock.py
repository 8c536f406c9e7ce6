"""The locks: deploy/docker/*.lock, the images' pinned dependencies, still satisfy
pyproject.toml (regenerate with `make lock`) and hold no development tools; requirements/*.lock,
the development venvs', pin what the images pin, and this venv is what its lock says."""

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
DEV_LOCK = ROOT / "requirements" / "dev.lock"
FEATURES_DEV_LOCK = ROOT / "requirements" / "features-dev.lock"
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


@pytest.mark.parametrize(
    ("development", "image"),
    [(DEV_LOCK, LOCK), (FEATURES_DEV_LOCK, FEATURES_LOCK)],
    ids=["dev", "features-dev"],
)
def test_the_development_lock_pins_what_its_image_pins(development: Path, image: Path) -> None:
    """Tests run the versions the image ships: every package of the image's lock is in the
    development lock at the same version (`make lock` resolves one under the other)."""
    developed, shipped = pins(development), pins(image)
    assert {n: (v, developed.get(n)) for n, v in shipped.items() if developed.get(n) != v} == {}


@pytest.mark.parametrize(
    ("development", "extras"),
    [(DEV_LOCK, ["dev"]), (FEATURES_DEV_LOCK, ["dev", "features"])],
    ids=["dev", "features-dev"],
)
def test_the_development_lock_satisfies_the_extras(development: Path, extras: list[str]) -> None:
    locked = pins(development)
    wanted = [Requirement(d) for extra in extras for d in PROJECT["optional-dependencies"][extra]]
    unmet = [
        str(r)
        for r in wanted
        if not r.specifier.contains(locked.get(canonicalize_name(r.name), "0!0"), prereleases=True)
    ]
    assert unmet == [], f"{development.name} does not satisfy these: run `make lock UPGRADE=`"


def test_this_venv_holds_what_its_lock_pins() -> None:
    """`make install` syncs .venv to requirements/dev.lock; a package at another version (an
    install by hand, a stale venv) fails here rather than as a puzzling test elsewhere."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    locked = pins(DEV_LOCK)
    assert {n: (v, installed.get(n)) for n, v in locked.items() if installed.get(n) != v} == {}
