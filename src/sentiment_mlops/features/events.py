"""Events the entity features are computed from: labelled texts with time, author, account.

pandas only (no Feast), so the time-ordered split works in the core install. The code runs
on pandas 2 (what Feast pins) and 3 (the core install): columns are converted explicitly
rather than relying on either version's default string or datetime types.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sentiment_mlops.data import (
    DataError,
    check_text_lengths,
    is_nan_word,
    read_table,
    row_error,
)
from sentiment_mlops.subjects import subject_hash

# Column names in the entity rows Feast joins on (the entities' join keys) and in events.
EVENT_ID = "event_id"
TIMESTAMP = "event_timestamp"
USER = "user_id"
ACCOUNT = "account"
LABEL = "label"
TEXT = "text"
# When an event's label became known, if not at the event's own time (feedback: later).
LABELLED_AT = "labelled_at"


def load_events(
    path: Path,
    subject_key: bytes,
    *,
    id_column: str = "tweet_id",
    time_column: str = "created_at",
    user_column: str = "user",
    account_column: str = "airline",
    text_column: str = "text",
    label_column: str = "label",
    max_text_chars: int | None = None,
) -> pd.DataFrame:
    """A context file (e.g. `with-context.csv`) as events sorted by time, one per id.

    A repeated id is the same event written twice (the airline file repeats 155 tweets, a
    few with different crowd labels): counting it twice would inflate its author's history
    and put one text in both halves of a split, so the first row of each id is kept. Authors
    become their `subjects.subject_hash` under `subject_key`, the key the prediction log's
    `subject_hash` and serving's lookups use: the `user` entity's key everywhere, so the
    feature store never holds an id.
    A text longer than `max_text_chars` (None: no limit) is refused naming its row in the
    file.
    """
    frame = read_table(path)
    columns = {
        id_column: EVENT_ID,
        time_column: TIMESTAMP,
        user_column: USER,
        account_column: ACCOUNT,
        text_column: TEXT,
        label_column: LABEL,
    }
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: entity features need the columns {', '.join(columns)}; "
            f"missing {', '.join(missing)}"
        )
    check_text_lengths(frame[text_column].tolist(), str(path), text_column, max_text_chars)
    shown = {ours: theirs for theirs, ours in columns.items()}
    events = prepare_events(frame[list(columns)].rename(columns=columns), str(path), shown=shown)
    events[USER] = events[USER].map(lambda user: subject_hash(user, subject_key)).astype(object)
    return events


def prepare_events(
    events: pd.DataFrame,
    source: str,
    *,
    complete: bool = True,
    shown: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Validate and normalise an events frame with the columns above: ids and keys as
    Python strings, times as UTC, sorted by time (stable), duplicate ids dropped (the first
    kept). `text` is kept when present (training needs it, the aggregates do not). Without
    `complete` (the prediction log's events) an event may lack a label or one of its keys
    (None), and `labelled_at` says when a label became known."""

    def name(column: str) -> str:  # as the file calls it, in errors
        return (shown or {}).get(column, column)

    columns = {
        EVENT_ID: _strings(events[EVENT_ID], source, name(EVENT_ID)),
        TIMESTAMP: _times(events[TIMESTAMP], source, name(TIMESTAMP)),
        USER: _strings(events[USER], source, name(USER), required=complete),
        ACCOUNT: _strings(events[ACCOUNT], source, name(ACCOUNT), required=complete),
        LABEL: _strings(events[LABEL], source, name(LABEL), required=complete),
    }
    if TEXT in events.columns:
        columns[TEXT] = _strings(events[TEXT], source, name(TEXT), required=complete)
    if LABELLED_AT in events.columns:
        columns[LABELLED_AT] = _times(
            events[LABELLED_AT], source, name(LABELLED_AT), required=False
        )
    out = pd.DataFrame(columns)
    out = out[~out[EVENT_ID].duplicated(keep="first")]
    return out.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)


def _strings(column: pd.Series, source: str, name: str, *, required: bool = True) -> pd.Series:
    """Stripped strings, None where empty. Where a value is `required` (a context file's
    columns), an empty cell or the word NaN (how a missing value is written, as the training
    data refuses it) is an error naming the first such row, counted from 1 as in the file's
    data rows; the prediction log's events may lack keys, and a user may well write "NaN"."""
    values = [
        "" if value is None or value is pd.NA or value != value else str(value).strip()
        for value in column.to_numpy(dtype=object)
    ]
    if required:
        empty = [row for row, value in enumerate(values, start=1) if not value]
        if empty:
            raise row_error(source, empty, name, "empty")
        nan_word = [row for row, value in enumerate(values, start=1) if is_nan_word(value)]
        if nan_word:
            raise row_error(
                source, nan_word, name, "the word NaN, which is how a missing value is written"
            )
    return pd.Series([value or None for value in values], index=column.index, dtype=object)


def _times(column: pd.Series, source: str, name: str, *, required: bool = True) -> pd.Series:
    parsed = pd.to_datetime(column, utc=True, errors="coerce")
    bad = (parsed.isna() & column.notna()).to_numpy() if not required else parsed.isna()
    if np.asarray(bad).any():
        rows = [int(row) + 1 for row in np.flatnonzero(np.asarray(bad))]
        raise row_error(source, rows, name, "not a timestamp")
    return parsed.astype("datetime64[ns, UTC]")


def time_split(events: pd.DataFrame, test_size: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The earliest events for training, the latest `test_size` share for testing.

    Events sharing the cut's timestamp all go to the test side, so no test event has a
    training event at or after its own time.
    """
    if not 0 < test_size < 1:
        raise DataError(f"test_size must be between 0 and 1, not {test_size}")
    ordered = events.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    cut_index = round(len(ordered) * (1 - test_size))
    if cut_index <= 0 or cut_index >= len(ordered):
        raise DataError(f"{len(ordered)} events are too few for a time split at {test_size}")
    cut = ordered[TIMESTAMP].iloc[cut_index]
    train = ordered[ordered[TIMESTAMP] < cut].reset_index(drop=True)
    test = ordered[ordered[TIMESTAMP] >= cut].reset_index(drop=True)
    return train, test
