"""The windowed aggregates behind the feature views, computed from events.

Each function returns feature rows `(entity key, event_timestamp, features…)` where the row
stamped T describes the entity after every event at or before T. A lookup "as of" an event
at time t asks for `t - AS_OF_OFFSET`, so it sees only events strictly before t (same-second
events of the same author included: none of them can inform the other). Feast's
point-in-time join then picks, per entity row, the latest feature row at or before that
time, which is exactly this state.

- user (the author): every earlier labelled event, no window: count and label shares.
- account (the addressed airline): events of the last 24 h. A sliding window changes when an
  event enters and again when it leaves, so rows are written at both moments; a lookup
  between two events therefore never sees an event older than 24 h.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pandas as pd

from sentiment_mlops.features.events import ACCOUNT, LABEL, TIMESTAMP, USER

LABELS = ("negative", "neutral", "positive")
ACCOUNT_WINDOW = timedelta(hours=24)
# How far before an event its features are looked up: below the data's one-second
# resolution, above the microsecond Parquet and Feast keep.
AS_OF_OFFSET = pd.Timedelta(milliseconds=1)

FEATURE_SERVICE = "sentiment_context"
USER_VIEW = "user_history"
ACCOUNT_VIEW = "account_24h"
USER_FEATURES = ("user_tweets", *(f"user_{label}_share" for label in LABELS))
ACCOUNT_FEATURES = (
    "account_tweets_24h",
    *(f"account_{label}_share_24h" for label in LABELS),
)
# The model's entity features, in the order its columns are fitted and scored.
FEATURES: tuple[str, ...] = (*USER_FEATURES, *ACCOUNT_FEATURES)
# What an entity with no history has: no tweets, no shares. Training fills rows without a
# feature row with these and serving uses them for a missing entity or a store that is
# down, so both sides mean the same thing by "unknown".
DEFAULTS: dict[str, float] = dict.fromkeys((*USER_FEATURES, *ACCOUNT_FEATURES), 0.0)


def user_rows(events: pd.DataFrame, labels: Sequence[str] = LABELS) -> pd.DataFrame:
    """Per author and distinct event time: earlier-or-equal events' count and label shares."""
    deltas = _label_deltas(events, USER, events[TIMESTAMP], labels)
    return _cumulative(deltas, USER, "user", "", labels)


def account_rows(events: pd.DataFrame, labels: Sequence[str] = LABELS) -> pd.DataFrame:
    """Per account and change point: count and label shares over the 24 h ending there."""
    entering = _label_deltas(events, ACCOUNT, events[TIMESTAMP], labels)
    leaving = _label_deltas(events, ACCOUNT, events[TIMESTAMP] + ACCOUNT_WINDOW, labels)
    count_columns = ["n", *labels]
    leaving[count_columns] = -leaving[count_columns]
    deltas = pd.concat([entering, leaving], ignore_index=True)
    return _cumulative(deltas, ACCOUNT, "account", "_24h", labels)


def _label_deltas(
    events: pd.DataFrame, key: str, times: pd.Series, labels: Sequence[str]
) -> pd.DataFrame:
    label_values = events[LABEL].to_numpy(dtype=object)
    frame = pd.DataFrame(
        {
            key: events[key].to_numpy(dtype=object),
            TIMESTAMP: times.to_numpy(),
            "n": np.ones(len(events)),
        }
    )
    for label in labels:
        frame[label] = (label_values == label).astype(np.float64)
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame


def _cumulative(
    deltas: pd.DataFrame, key: str, prefix: str, suffix: str, labels: Sequence[str]
) -> pd.DataFrame:
    count_columns = ["n", *labels]
    per_time = deltas.groupby([key, TIMESTAMP], sort=True)[count_columns].sum()
    running = per_time.groupby(level=0).cumsum().reset_index()
    n = running["n"].to_numpy()
    rows = pd.DataFrame(
        {
            key: running[key].to_numpy(dtype=object),
            TIMESTAMP: running[TIMESTAMP],
            f"{prefix}_tweets{suffix}": n.round().astype(np.int64),
        }
    )
    safe = np.where(n > 0, n, 1.0)
    for label in labels:
        share = np.where(n > 0, running[label].to_numpy() / safe, 0.0)
        rows[f"{prefix}_{label}_share{suffix}"] = share
    return rows
