"""Shared fixtures: where the real datasets are, and isolated registries per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sentiment_mlops.runtime import configure_process

from .processes import left_running

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from sentiment_mlops.train import TrainResult

# The test suite's entry point: pytest imports this before any test module, while neither
# numpy nor mlflow is loaded yet, so their thread and telemetry settings still take effect.
configure_process()

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def no_process_left_running() -> Iterator[None]:
    """Torn down last, after every other fixture: any process the run started and did not
    stop is killed, and the run fails naming it (tests/processes.py)."""
    yield
    leftover = left_running()
    if leftover:
        pytest.fail("processes the tests left running (now killed):\n" + "\n".join(leftover))


def shared_data_dir() -> Path:
    """The read-only datasets beside the repository (never copied into it)."""
    configured = os.environ.get("SENTIMENT_SHARED_DATA")
    path = Path(configured) if configured else ROOT.parent / "shared" / "data"
    if not path.is_dir():
        raise RuntimeError(f"shared datasets not found at {path}; set SENTIMENT_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The datasets; where they are not (GitHub's runners), tests that need them are skipped
    only if SENTIMENT_TEST_SKIP_SHARED_DATA=true says to, as .github/workflows/ci.yml does."""
    try:
        return shared_data_dir()
    except RuntimeError as exc:
        if os.environ.get("SENTIMENT_TEST_SKIP_SHARED_DATA", "").lower() == "true":
            pytest.skip(str(exc))
        raise


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MLflow, Prometheus or SENTIMENT_ variables from the developer's shell leak into a
    test."""
    for name in list(os.environ):
        if name.startswith("SENTIMENT_") or name in {
            "MLFLOW_TRACKING_URI",
            "PROMETHEUS_MULTIPROC_DIR",
        }:
            monkeypatch.delenv(name)
    yield


@pytest.fixture(scope="session")
def default_model() -> Pipeline:
    """The model `sentiment train` builds with no arguments (built-in data, default config),
    fitted once per session: model tests check its behaviour, API tests serve it."""
    from sentiment_mlops.config import TrainConfig
    from sentiment_mlops.train import DataSpec, fit, load_split

    config, spec = TrainConfig(), DataSpec()
    return fit(load_split(spec, config), config, spec).pipeline


@pytest.fixture(scope="session")
def imdb_default(shared_data: Path) -> TrainResult:
    """The default pipeline trained on IMDB's 25k reviews and evaluated on the other 25k, once
    per session: the slowest fit in the suite, shared by the accuracy floor and the scorer."""
    from sentiment_mlops.config import TrainConfig
    from sentiment_mlops.train import DataSpec, fit, load_split

    imdb = shared_data / "imdb-aclimdb"
    config, spec = TrainConfig(), DataSpec(imdb / "train.csv", imdb / "test.csv")
    return fit(load_split(spec, config), config, spec)
