"""Training is reproducible: same data, config and seed give the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sentiment_mlops.config import TrainConfig
from sentiment_mlops.data import DataError
from sentiment_mlops.train import DataSpec, fit, load_split


@pytest.fixture(scope="module")
def mr(shared_data: Path) -> DataSpec:
    return DataSpec(path=shared_data / "mr-rt-polarity" / "all.csv")


def test_same_data_config_and_seed_give_identical_results(mr: DataSpec) -> None:
    config = TrainConfig()
    first = fit(load_split(mr, config), config)
    second = fit(load_split(mr, config), config)
    assert first.split.train.fingerprint() == second.split.train.fingerprint()
    assert first.report.to_dict() == second.report.to_dict()
    texts = first.split.test.texts
    np.testing.assert_array_equal(
        first.pipeline.predict_proba(texts), second.pipeline.predict_proba(texts)
    )


def test_another_seed_gives_another_split(mr: DataSpec) -> None:
    a = load_split(mr, TrainConfig(seed=1))
    b = load_split(mr, TrainConfig(seed=2))
    assert a.train.fingerprint() != b.train.fingerprint()
    assert len(a.test) == len(b.test)
    assert 0.19 < len(a.test) / (len(a.train) + len(a.test)) < 0.21


def test_default_model_is_useful_on_movie_reviews(mr: DataSpec) -> None:
    config = TrainConfig()
    trained = fit(load_split(mr, config), config)
    assert trained.report.accuracy > 0.72
    assert trained.report.classes == ["negative", "positive"]


def test_builtin_corpus_defaults_to_positive_vs_negative() -> None:
    split = load_split(DataSpec(), TrainConfig())
    assert split.train.classes == ["negative", "positive"]
    assert len(split.train) + len(split.test) > 20_000


def test_test_data_without_data_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--test-data needs --data"):
        load_split(DataSpec(test_path=tmp_path / "t.csv"), TrainConfig())
