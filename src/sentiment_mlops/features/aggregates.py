"""The windowed aggregates behind the feature views, computed from events.

Each function returns feature rows `(entity key, event_timestamp, features…)` where the row
stamped T describes the entity after every event at or before T. A lookup "as of" an event
at time t asks for `t - AS_OF_OFFSET`, so it sees only events strictly before t (same-second
events of the same author included: none of them can inform the other). Feast's
point-in-time join then picks, per entity row, the latest feature row at or before that
time, which is exactly this state.

- user (the author): every earlier event, no window: count and label shares.
- account (the addressed airline): events of the last 24 h. A sliding window changes when an
  event enters and again when it leaves, so rows are written at both moments; a lookup
  between two events therefore never sees an event older than 24 h.

Counts count every event; label shares are over the events whose label is known, from the
moment it is known (`LABELLED_AT`, the event's own time when the column is absent). In a
training file every event has its label at its own time, so the shares are over all earlier
events; in the prediction log a label is feedback, which comes later and for some
predictions only (features/live.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pandas as pd

from sentiment_mlops.features.events import ACCOUNT, LABEL, LABELLED_AT, TIMESTAMP, USER

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
    """Per author and change point: the count of events at or before it and the label
    shares of those whose label was known by then."""
    events = events[events[USER].notna()]
    times, known = events[TIMESTAMP], _labelled_at(events)
    deltas = _deltas(events, USER, times, known, known.notna(), labels)
    return _cumulative(deltas, USER, "user", "", labels)


def account_rows(events: pd.DataFrame, labels: Sequence[str] = LABELS) -> pd.DataFrame:
    """Per account and change point: count and label shares over the 24 h ending there (a
    label known only after its event left the window never counts)."""
    events = events[events[ACCOUNT].notna()]
    times, known = events[TIMESTAMP], _labelled_at(events)
    leaves = times + ACCOUNT_WINDOW
    in_window = (known < leaves).fillna(False).to_numpy(dtype=bool)
    entering = _deltas(events, ACCOUNT, times, known, in_window, labels)
    leaving = _deltas(events, ACCOUNT, leaves, leaves, in_window, labels)
    count_columns = ["n", "labelled", *labels]
    leaving[count_columns] = -leaving[count_columns]
    deltas = pd.concat([entering, leaving], ignore_index=True)
    return _cumulative(deltas, ACCOUNT, "account", "_24h", labels)


def _labelled_at(events: pd.DataFrame) -> pd.Series:
    """When each event's label became known (its own time unless `labelled_at` says
    otherwise); NaT for an event without one."""
    times = pd.to_datetime(events[TIMESTAMP], utc=True)
    if LABELLED_AT in events.columns:
        known = pd.to_datetime(events[LABELLED_AT], utc=True).fillna(times)
    else:
        known = times
    has_label = events[LABEL].notna().to_numpy() & (events[LABEL].to_numpy(dtype=object) != "")
    return known.where(has_label)


def _deltas(
    events: pd.DataFrame,
    key: str,
    times: pd.Series,
    label_times: pd.Series,
    counted_labels: np.ndarray,
    labels: Sequence[str],
) -> pd.DataFrame:
    """An event's count changes at `times`; its label, where `counted_labels`, at
    `label_times`."""
    keys = events[key].to_numpy(dtype=object)
    counts = pd.DataFrame({key: keys, TIMESTAMP: times.to_numpy(), "n": np.ones(len(events))})
    counts["labelled"] = 0.0
    label_values = events[LABEL].to_numpy(dtype=object)[counted_labels]
    labelled = pd.DataFrame(
        {
            key: keys[counted_labels],
            TIMESTAMP: label_times.to_numpy()[counted_labels],
            "n": 0.0,
            "labelled": 1.0,
        }
    )
    for label in labels:
        counts[label] = 0.0
        labelled[label] = (label_values == label).astype(np.float64)
    frame = pd.concat([counts, labelled], ignore_index=True)
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame


def _cumulative(
    deltas: pd.DataFrame, key: str, prefix: str, suffix: str, labels: Sequence[str]
) -> pd.DataFrame:
    count_columns = ["n", "labelled", *labels]
    per_time = deltas.groupby([key, TIMESTAMP], sort=True)[count_columns].sum()
    running = per_time.groupby(level=0).cumsum().reset_index()
    n = running["n"].to_numpy()
    labelled = running["labelled"].to_numpy()
    rows = pd.DataFrame(
        {
            key: running[key].to_numpy(dtype=object),
            TIMESTAMP: running[TIMESTAMP],
            f"{prefix}_tweets{suffix}": n.round().astype(np.int64),
        }
    )
    # rounded: a window's +1 and -1 in floating point may leave 1e-16 where 0 was meant
    labelled = labelled.round()
    safe = np.where(labelled > 0, labelled, 1.0)
    for label in labels:
        share = np.where(labelled > 0, running[label].to_numpy() / safe, 0.0)
        rows[f"{prefix}_{label}_share{suffix}"] = share
    return rows
