"""The default pipeline on the standard IMDB split (25k train / 25k test): its quality floor,
and the compiled scorer on its reviews. One file, so the suite's slowest fit (the session's
`imdb_default`) runs once: pytest-xdist gives each worker its own session, and `--dist
loadfile` keeps a file on one worker."""

from __future__ import annotations

import numpy as np

from sentiment_mlops.train import TrainResult
from tests.unit.test_scorer import assert_same_as_sklearn


def test_default_pipeline_reaches_90_percent_on_imdb(imdb_default: TrainResult) -> None:
    assert len(imdb_default.split.test) == 25_000
    assert imdb_default.report.accuracy >= 0.90


def test_the_compiled_scorer_scores_imdb_reviews_as_sklearn(imdb_default: TrainResult) -> None:
    model = imdb_default.pipeline
    texts = np.array(imdb_default.split.test.texts, dtype=object)
    sample = np.random.default_rng(0).choice(texts, size=5_000, replace=False)
    assert_same_as_sklearn(model, sample)
