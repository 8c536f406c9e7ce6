"""Fresh features from live traffic: predictions served and given feedback in a real
prediction log (SQLite), `materialize_log`, and the online store answering for that user
(by the hash of their id) and account; what is not known by the time materialised to is not
used, and running it twice changes nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from pydantic import SecretStr
from sklearn.pipeline import Pipeline

from tests.apps import api_settings, bearer, ready_client
from tests.fakes import FakeSource
from tests.features.conftest import needs_feast
from tests.prediction_events import BOUND, SUBJECT_KEY, event, keyed_hash

needs_feast()

from sentiment_mlops.config import Settings  # noqa: E402
from sentiment_mlops.features.aggregates import ACCOUNT_VIEW, USER_VIEW  # noqa: E402
from sentiment_mlops.features.live import materialize_log  # noqa: E402
from sentiment_mlops.features.repository import (  # noqa: E402
    EVENTS,
    OnlineReader,
    Repository,
    open_repository,
)
from sentiment_mlops.serving.app import create_app  # noqa: E402
from sentiment_mlops.serving.log_database import LogDatabase  # noqa: E402
from sentiment_mlops.serving.prediction_log import PredictionLog, prediction_row  # noqa: E402

NAMES = (
    "user_tweets",
    "user_negative_share",
    "user_positive_share",
    "account_tweets_24h",
    "account_negative_share_24h",
)


@pytest.fixture(params=["sqlite", "redis"])
def settings(request: pytest.FixtureRequest, feature_settings: Settings) -> Iterator[Settings]:
    """An API's settings (its prediction log on SQLite under var/) with a feature
    repository of its own, online on SQLite or Redis."""
    settings = api_settings(
        feature_settings.var_dir / "var",
        features_project=feature_settings.features_project,
        features_online_store=request.param,
    )
    yield settings
    open_repository(settings).store.teardown()


def online(settings: Settings, user_id: str, account: str) -> dict[str, float | None]:
    """What serving reads for a request naming `user_id` and `account`."""
    values = OnlineReader(settings, NAMES, socket_timeout=BOUND).read(user_id, account)
    return values


def offline_files(repository: Repository) -> dict[str, pd.DataFrame]:
    return {
        name: pd.read_parquet(repository.parquet(name))
        for name in (EVENTS, USER_VIEW, ACCOUNT_VIEW)
    }


def test_served_predictions_and_feedback_reach_the_online_store(
    settings: Settings, default_model: Pipeline
) -> None:
    app = create_app(settings, FakeSource({1: default_model}, {"champion": 1}))
    with ready_client(app, headers=bearer("predict", "feedback")) as client:
        asked = [
            {"text": "lost my bag again", "user_id": "alice@example.com", "account": "@united"},
            {
                "text": "thanks for the upgrade",
                "user_id": "alice@example.com",
                "account": "@united",
            },
            # no user_id: the token's subject is logged, an entity nobody looks up
            {"text": "on time today", "account": "@united"},
            {"text": "no account named", "user_id": "alice@example.com"},
        ]
        made = [client.post("/predict", json=body).json() for body in asked]
        sent = client.post(
            "/feedback", json={"prediction_id": made[0]["prediction_id"], "label": "negative"}
        )
        assert sent.status_code == 200, sent.text
        log: PredictionLog = client.app.state.services.prediction_log
        assert log.flush(BOUND)

    done = materialize_log(settings)
    assert (done.read, done.labelled, done.stored) == (4, 1, 4)
    got = online(settings, "alice@example.com", "@united")
    assert got == {
        "user_tweets": 3.0,  # every prediction counts, the one without an account too
        "user_negative_share": 1.0,  # of the one with feedback
        "user_positive_share": 0.0,
        "account_tweets_24h": 3.0,
        "account_negative_share_24h": 1.0,
    }
    # The store holds the user id's keyed hash, the log's, never the id nor its plain SHA-256.
    repository = open_repository(settings)
    users = set(offline_files(repository)[EVENTS]["user_id"].dropna())
    assert keyed_hash("alice@example.com") in users
    assert hashlib.sha256(b"alice@example.com").hexdigest() not in users
    assert not any("alice" in user for user in users)

    before = offline_files(repository)
    again = materialize_log(settings, end=done.end)
    assert (again.read, again.stored) == (4, 4)
    for name, frame in offline_files(repository).items():
        pd.testing.assert_frame_equal(frame, before[name], obj=name)
    assert online(settings, "alice@example.com", "@united") == got
    # A reader under another key (the key rotated) finds no history for alice; her account
    # is not hashed and keeps its features.
    rotated = SecretStr("a-rotated-subject-key-0123456789abcdef")
    assert online(
        settings.model_copy(update={"subject_key": rotated}), "alice@example.com", "@united"
    ) == {
        **{name: None for name in NAMES if name.startswith("user_")},
        **{name: got[name] for name in NAMES if name.startswith("account_")},
    }


def test_what_is_known_after_the_time_materialised_to_is_not_used(tmp_path: Path) -> None:
    settings = api_settings(tmp_path / "var", features_project="live_point_in_time")
    database = LogDatabase(settings.prediction_log_url(), BOUND)
    database.migrate()
    at = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    first = event(subject="carol", account="Delta", created_at=at)
    second = event(subject="carol", account="Delta", created_at=at + timedelta(hours=1))
    database.insert(
        [prediction_row(made, keep_text=False, subject_key=SUBJECT_KEY) for made in (first, second)]
    )
    database.add_feedback(first.prediction_id, "negative", at + timedelta(minutes=30))
    database.add_feedback(second.prediction_id, "positive", at + timedelta(minutes=90))
    database.dispose()

    def as_of(minutes: int) -> tuple[float | None, ...]:
        materialize_log(settings, end=at + timedelta(minutes=minutes))
        return tuple(online(settings, "carol", "Delta").values())

    # tweets, negative share, positive share (user); tweets, negative share (account)
    assert as_of(15) == (1, 0, 0, 1, 0), "the feedback 15 minutes later is not known yet"
    assert as_of(45) == (1, 1, 0, 1, 1), "the second prediction is not made yet"
    assert as_of(75) == (2, 1, 0, 2, 1)
    assert as_of(120) == (2, 0.5, 0.5, 2, 0.5)
    # With --since, only what changed since is read; the rest is in the repository already.
    later = materialize_log(settings, since=at + timedelta(minutes=80), end=at + timedelta(hours=2))
    assert (later.read, later.stored) == (1, 2)
    assert tuple(online(settings, "carol", "Delta").values()) == (2, 0.5, 0.5, 2, 0.5)


def test_a_server_in_another_folder_reads_what_the_job_materialises_through_the_registry(
    tmp_path: Path, feature_settings: Settings, sql_registry: str
) -> None:
    """`materialize_log` as the CronJob runs it (its own folder, the SQL registry, Redis) and
    serving's reader in another folder, sharing only the registry and Redis. The reader stays
    open, as a server's does for a model: the next run (definitions applied again, a new
    prediction and feedback in the log) reaches it."""
    job = api_settings(
        tmp_path / "job",
        features_project=feature_settings.features_project,
        features_online_store="redis",
        features_registry=sql_registry,
    )
    api = job.model_copy(update={"var_dir": tmp_path / "api"})
    database = LogDatabase(job.prediction_log_url(), BOUND)
    database.migrate()
    at = datetime.now(UTC) - timedelta(hours=2)
    first = event(subject="erin", account="@jetblue", created_at=at)
    second = event(subject="erin", account="@jetblue", created_at=at + timedelta(hours=1))
    database.insert(
        [prediction_row(made, keep_text=False, subject_key=SUBJECT_KEY) for made in (first, second)]
    )
    database.add_feedback(first.prediction_id, "positive", at + timedelta(minutes=10))
    try:
        done = materialize_log(job)
        reader = OnlineReader(api, NAMES, socket_timeout=BOUND)
        before = reader.read("erin", "@jetblue")
        database.add_feedback(second.prediction_id, "negative", datetime.now(UTC))
        materialize_log(job)
        after = reader.read("erin", "@jetblue")
    finally:
        database.dispose()
        open_repository(job).store.teardown()
    assert (done.read, done.labelled, done.stored) == (2, 1, 2)
    # tweets, negative share, positive share (user); tweets, negative share (account)
    assert tuple(before.values()) == (2, 0, 1, 2, 0)
    assert tuple(after.values()) == (2, 0.5, 0.5, 2, 0.5)
    assert not (tmp_path / "api").exists()  # the server needs no folder of its own
