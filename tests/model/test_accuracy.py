"""The default pipeline's quality floor on the standard IMDB split (25k train / 25k test)."""

from __future__ import annotations

from sentiment_mlops.train import TrainResult


def test_default_pipeline_reaches_90_percent_on_imdb(imdb_default: TrainResult) -> None:
    assert len(imdb_default.split.test) == 25_000
    assert imdb_default.report.accuracy >= 0.90
