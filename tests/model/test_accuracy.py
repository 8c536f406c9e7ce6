"""The default pipeline's quality floor on the standard IMDB split (25k train / 25k test)."""

from __future__ import annotations

from pathlib import Path

from sentiment_mlops.config import TrainConfig
from sentiment_mlops.train import DataSpec, fit, load_split


def test_default_pipeline_reaches_90_percent_on_imdb(shared_data: Path) -> None:
    imdb = shared_data / "imdb-aclimdb"
    config = TrainConfig()
    spec = DataSpec(imdb / "train.csv", imdb / "test.csv")
    trained = fit(load_split(spec, config), config, spec)
    assert len(trained.split.test) == 25_000
    assert trained.report.accuracy >= 0.90
