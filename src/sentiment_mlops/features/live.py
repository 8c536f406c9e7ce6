"""Fresh features from live traffic: the prediction log's predictions and their feedback as
events, added to the feature repository and materialised into the online store.

An event is a primary prediction (shadow predictions score the same request again and would
count it twice): its time is when it was made, its author the log's `subject_hash` (already
the `user` entity's key: `subjects.subject_hash` under the server's subject key, so this job
needs no key of its own), its account the one the request named. Its
label is the feedback's, known from the moment the feedback came (`labelled_at`), so a
lookup before that time does not see it. Counts therefore count every prediction, and label
shares are over the predictions that got feedback; in a training file every earlier tweet
had its label. A prediction whose subject came from a token (no `user_id` in the request)
forms a user entity nobody looks up; one that named no account counts for its user only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import or_, select

from sentiment_mlops.config import Settings
from sentiment_mlops.features.events import (
    ACCOUNT,
    EVENT_ID,
    LABEL,
    LABELLED_AT,
    TIMESTAMP,
    USER,
    prepare_events,
)
from sentiment_mlops.serving.log_database import LogDatabase
from sentiment_mlops.serving.predictions import feedback, predictions


@dataclass(frozen=True)
class Materialized:
    """What one run did: events read from the log (of which labelled), events the
    repository now holds, and the time the online store is current as of."""

    read: int
    labelled: int
    stored: int
    end: datetime


def log_events(settings: Settings, since: datetime | None = None) -> pd.DataFrame:
    """The log's primary predictions as events (see the module); with `since`, only those
    made or given feedback at or after it. The log's schema is brought to head first, as
    the server does (the `account` column came with migration 0002)."""
    database = LogDatabase(settings.prediction_log_url(), settings.database_timeout_seconds)
    try:
        database.migrate()
        query = (
            select(
                predictions.c.id,
                predictions.c.created_at,
                predictions.c.subject_hash,
                predictions.c.account,
                feedback.c.label,
                feedback.c.received_at,
            )
            .select_from(
                predictions.outerjoin(feedback, feedback.c.prediction_id == predictions.c.id)
            )
            .where(predictions.c.shadow_of.is_(None))
            .where(or_(predictions.c.subject_hash.is_not(None), predictions.c.account.is_not(None)))
        )
        if since is not None:
            query = query.where(
                or_(predictions.c.created_at >= since, feedback.c.received_at >= since)
            )
        with database.engine.connect() as connection:
            rows = connection.execute(query).all()
    finally:
        database.dispose()
    frame = pd.DataFrame(
        rows, columns=[EVENT_ID, TIMESTAMP, USER, ACCOUNT, LABEL, LABELLED_AT], dtype=object
    )
    # SQLite gives back naive datetimes; the log writes UTC.
    for column in (TIMESTAMP, LABELLED_AT):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return prepare_events(frame, "the prediction log", complete=False)


def materialize_log(
    settings: Settings, since: datetime | None = None, end: datetime | None = None
) -> Materialized:
    """Add the log's events (`log_events`) to the repository's offline store and
    materialise every entity's latest features as of `end` (default: now) online.

    Running it again changes nothing: an event is kept once by its id (the newest read
    wins, so feedback that came since replaces the unlabelled event) and the feature rows
    are computed from all the events kept.
    """
    from sentiment_mlops.features.repository import add_events, materialize, open_repository

    events = log_events(settings, since)
    repository = open_repository(settings)
    stored = add_events(repository, events)
    end = end or datetime.now(UTC)
    materialize(repository, end)
    return Materialized(len(events), int(events[LABEL].notna().sum()), stored, end)
