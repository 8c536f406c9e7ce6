"""Feature-store tests: Feast's real repository over Parquet, SQLite and Redis.

They need the `features` extra, which `make test` installs into .venv-features (Feast pins
pandas<3; the core suite runs on pandas 3 in .venv): each module starts with
`needs_feast()`, so where feast is not importable its tests are skipped, saying why.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import SecretStr

from sentiment_mlops.config import Settings
from sentiment_mlops.features.events import prepare_events
from sentiment_mlops.features.feast_import import feast_imported
from sentiment_mlops.subjects import subject_hash

from ..postgres_databases import throwaway_database
from ..prediction_events import SUBJECT_KEY


def needs_feast() -> None:
    """Skip the calling test module unless the `features` extra is installed."""
    try:
        feast_imported()
    except ImportError:
        pytest.skip(
            "the `features` extra is not installed (.venv-features)", allow_module_level=True
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/features/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.features)


@pytest.fixture
def feature_settings(tmp_path: Path, clean_env: None) -> Settings:
    """A repository of its own under tmp_path, with a project name of its own (Redis is
    shared between tests and runs), and the test apps' subject key."""
    return Settings(
        var_dir=tmp_path,
        features_project=f"test_{uuid.uuid4().hex[:12]}",
        subject_key=SecretStr(SUBJECT_KEY.decode()),
    )


# The machine's PostgreSQL (SENTIMENT_TEST_POSTGRES_URL when set, as .ci/run sets it).
POSTGRES = os.environ.get(
    "SENTIMENT_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def sql_registry() -> Iterator[str]:
    """A SQLAlchemy URL of a PostgreSQL database made for this test and dropped after, for
    Feast's SQL registry. It names a password, which trust authentication ignores, so a test
    can check that it is written nowhere."""
    with throwaway_database(POSTGRES, "sentiment_feast") as url:
        registry = url.set(password=url.password or "not-written-anywhere")
        yield registry.render_as_string(hide_password=False)


def events(*rows: tuple[str, str, str, str, str]) -> pd.DataFrame:
    """Hand-made events: (id, time, user, account, label), the user keyed by `subject_hash`
    under the test key, as training keys the context file's authors."""
    frame = pd.DataFrame(
        rows, columns=["event_id", "event_timestamp", "user_id", "account", "label"]
    )
    frame["user_id"] = frame["user_id"].map(lambda user: subject_hash(user, SUBJECT_KEY))
    frame["text"] = "some text"
    return prepare_events(frame, "test events")


# Four hand-made events (ann at Delta then United, bob twice at Delta) and a time after all.
HAND_EVENTS = (
    ("a1", "2015-02-20T10:00:00Z", "ann", "Delta", "negative"),
    ("a2", "2015-02-20T12:00:00Z", "ann", "United", "positive"),
    ("b1", "2015-02-20T11:00:00Z", "bob", "Delta", "neutral"),
    ("b2", "2015-02-20T13:00:00Z", "bob", "Delta", "negative"),
)
AS_OF = datetime(2015, 2, 20, 14, 0, tzinfo=UTC)


def materialise_hand_events(repository: Any) -> None:
    """Make HAND_EVENTS the repository's events and materialise them as of AS_OF."""
    from sentiment_mlops.features.repository import materialize, write_offline

    write_offline(repository, events(*HAND_EVENTS))
    materialize(repository, AS_OF)
