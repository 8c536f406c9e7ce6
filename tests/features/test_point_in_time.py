"""Point-in-time correctness of the training join through Feast's historical retrieval."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.features.conftest import events, needs_feast

needs_feast()

from sentiment_mlops.config import Settings  # noqa: E402
from sentiment_mlops.features.aggregates import AS_OF_OFFSET  # noqa: E402
from sentiment_mlops.features.repository import (  # noqa: E402
    historical_features,
    open_repository,
    write_offline,
)

BASE = (
    ("e1", "2015-02-20T10:00:00Z", "ann", "Delta", "negative"),
    ("e2", "2015-02-20T10:00:00Z", "ann", "Delta", "positive"),  # same second as e1
    ("e3", "2015-02-20T11:00:00Z", "ann", "Delta", "neutral"),
    ("e1", "2015-02-20T10:00:00Z", "ann", "Delta", "positive"),  # e1 repeated, relabelled
    ("b1", "2015-02-19T09:00:00Z", "bob", "United", "negative"),
    ("b2", "2015-02-20T09:30:00Z", "bob", "United", "positive"),
)


def features_of(settings: Settings, rows: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    repository = open_repository(settings)
    write_offline(repository, rows)
    wanted = rows.set_index("event_id").loc[targets].reset_index()
    entity_rows = pd.DataFrame(
        {
            "event_id": wanted["event_id"],
            "user_id": wanted["user_id"],
            "account": wanted["account"],
            "event_timestamp": wanted["event_timestamp"] - AS_OF_OFFSET,
        }
    )
    return historical_features(repository, entity_rows).set_index("event_id")


def test_only_earlier_events_count_and_repeated_ids_once(feature_settings: Settings) -> None:
    got = features_of(feature_settings, events(*BASE), ["e1", "e2", "e3", "b2"])
    # e1 and e2 share a second: neither sees the other; no feature row yet -> defaults.
    for same_second in ("e1", "e2"):
        assert got.loc[same_second, "user_tweets"] == 0
        assert got.loc[same_second, "user_negative_share"] == 0.0
    # e3 sees e1 (once, with its first label) and e2: two tweets, half negative.
    assert got.loc["e3", "user_tweets"] == 2
    assert got.loc["e3", "user_negative_share"] == pytest.approx(0.5)
    assert got.loc["e3", "user_positive_share"] == pytest.approx(0.5)
    assert got.loc["e3", "account_tweets_24h"] == 2
    # b2 is 24.5 h after b1: b1 has left United's window, but stays in bob's history.
    assert got.loc["b2", "account_tweets_24h"] == 0
    assert got.loc["b2", "user_tweets"] == 1
    assert got.loc["b2", "user_negative_share"] == 1.0


def test_a_value_written_after_the_event_is_not_used(feature_settings: Settings) -> None:
    later = ("e4", "2015-02-20T11:00:01Z", "ann", "Delta", "positive")
    before = features_of(feature_settings, events(*BASE), ["e3"])
    with_later = features_of(feature_settings, events(*BASE, later), ["e3"])
    pd.testing.assert_frame_equal(before, with_later)
    # The same event one second earlier does change e3's features: the check can fail.
    earlier = ("e4", "2015-02-20T10:59:59Z", "ann", "Delta", "positive")
    with_earlier = features_of(feature_settings, events(*BASE, earlier), ["e3"])
    assert with_earlier.loc["e3", "user_tweets"] == 3
    assert with_earlier.loc["e3", "account_tweets_24h"] == 3
