"""`sentiment train --features --split time`'s data path: events joined through Feast."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tests.features.conftest import needs_feast

needs_feast()

from sentiment_mlops.config import Settings, TrainConfig  # noqa: E402
from sentiment_mlops.features.aggregates import FEATURES  # noqa: E402
from sentiment_mlops.features.training import load_context_split  # noqa: E402
from sentiment_mlops.scorer import CompiledLinearScorer, make_scorer  # noqa: E402
from sentiment_mlops.train import DataSpec, fit  # noqa: E402


def test_features_and_time_split_reach_the_model(
    shared_data: Path, tmp_path: Path, feature_settings: Settings
) -> None:
    source = shared_data / "twitter-us-airline-sentiment" / "with-context.csv"
    sample = pd.read_csv(source, dtype=str, keep_default_na=False).iloc[:1500]
    path = tmp_path / "context.csv"
    sample.to_csv(path, index=False)
    config = TrainConfig.model_validate({"features": {"enabled": True, "split": "time"}})

    split = load_context_split(path, config, feature_settings)
    assert split.train.entity_names == split.test.entity_names == FEATURES
    assert split.train.entities is not None and split.test.entities is not None
    assert len(split.train) + len(split.test) == sample["tweet_id"].nunique()
    # Someone's history is known for some rows, not all.
    assert 0 < (split.test.entities[:, 0] > 0).sum() < len(split.test)

    result = fit(split, config, DataSpec(path))
    assert result.params["features.names"] == ",".join(FEATURES)
    assert result.tags["feature_service"] == "sentiment_context"
    scorer = make_scorer(result.pipeline)
    assert isinstance(scorer, CompiledLinearScorer)
    assert scorer.entity_features == FEATURES
