"""Shared fixtures: where the real datasets are, and isolated registries per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sklearn.pipeline import Pipeline

from sentiment_mlops.config import TrainConfig
from sentiment_mlops.train import DataSpec, fit, load_split

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The read-only datasets beside the repository (never copied into it)."""
    configured = os.environ.get("SENTIMENT_SHARED_DATA")
    path = Path(configured) if configured else ROOT.parent / "shared" / "data"
    if not path.is_dir():
        raise RuntimeError(f"shared datasets not found at {path}; set SENTIMENT_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_dir()


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
    config = TrainConfig()
    return fit(load_split(DataSpec(), config), config).pipeline
