from __future__ import annotations

import pytest
from sklearn.pipeline import Pipeline

from sentiment_mlops.config import TrainConfig
from sentiment_mlops.train import DataSpec, fit, load_split


@pytest.fixture(scope="session")
def default_model() -> Pipeline:
    """The model `sentiment train` builds with no arguments: built-in data, default config."""
    config, spec = TrainConfig(), DataSpec()
    return fit(load_split(spec, config), config, spec).pipeline
