"""Training/serving skew: after materialising, the online store (SQLite, Redis) gives what
the offline point-in-time join gave for the same entity and time."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from tests.features.conftest import AS_OF, materialise_hand_events, needs_feast
from tests.prediction_events import keyed_hash

needs_feast()

from sentiment_mlops.config import Settings  # noqa: E402
from sentiment_mlops.features.aggregates import DEFAULTS, FEATURES  # noqa: E402
from sentiment_mlops.features.repository import (  # noqa: E402
    Repository,
    historical_features,
    online_features,
    open_repository,
)


@pytest.fixture(params=["sqlite", "redis"])
def repository(request: pytest.FixtureRequest, feature_settings: Settings) -> Iterator[Repository]:
    settings = feature_settings.model_copy(update={"features_online_store": request.param})
    repository = open_repository(settings)
    yield repository
    repository.store.teardown()  # drops this project's keys from the shared Redis


def test_online_equals_offline_after_materialising(repository: Repository) -> None:
    materialise_hand_events(repository)
    keys = [
        (keyed_hash(user), account)
        for user, account in (("ann", "Delta"), ("bob", "United"), ("bob", "Delta"), ("x", "y"))
    ]
    offline = historical_features(
        repository,
        pd.DataFrame(
            {
                "user_id": [user for user, _ in keys],
                "account": [account for _, account in keys],
                "event_timestamp": pd.Timestamp(AS_OF),
            }
        ),
    )
    online = online_features(repository, [{"user_id": u, "account": a} for u, a in keys])
    for i, row in enumerate(online):
        assert row == {name: float(offline.loc[i, name]) for name in FEATURES}
    assert online[0]["user_tweets"] == 2
    assert online[2]["account_tweets_24h"] == 3
    assert online[3] == DEFAULTS
