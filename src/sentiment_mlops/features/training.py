"""Training rows with entity features: events → point-in-time join → split.

Every labelled event gets the features of its author and account as of just before its own
time (`aggregates.AS_OF_OFFSET`) through Feast's historical retrieval, so a row never sees
its own label or anything later. The join is per row and independent of the split; the
split then keeps each row's features. Feast is imported only when features are enabled: a
time split alone needs pandas only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sentiment_mlops import data as data_mod
from sentiment_mlops.config import Settings, TrainConfig
from sentiment_mlops.data import DataError, LabelledTexts, Split
from sentiment_mlops.features.aggregates import AS_OF_OFFSET, FEATURES
from sentiment_mlops.features.events import (
    ACCOUNT,
    EVENT_ID,
    LABEL,
    TEXT,
    TIMESTAMP,
    USER,
    load_events,
    time_split,
)
from sentiment_mlops.subjects import subject_key


def load_context_split(path: Path | None, config: TrainConfig, settings: Settings) -> Split:
    """Load events from `path`, join their entity features if enabled, and split them."""
    if path is None:
        raise DataError(
            "--features and --split time need --data with time, author and account columns "
            "(e.g. twitter-us-airline-sentiment/with-context.csv); the built-in corpus has none"
        )
    events = load_events(path, subject_key(settings), max_text_chars=settings.train_text_limit())
    entities: np.ndarray | None = None
    names: tuple[str, ...] = ()
    if config.features.enabled:
        entities, names = entity_matrix(events, settings), FEATURES
    full = LabelledTexts(
        events[TEXT].tolist(),
        events[LABEL].tolist(),
        str(path),
        entities=entities,
        entity_names=names,
    )
    data_mod.check_trainable(full, max_classes=settings.max_classes)
    if config.features.split == "random":
        return data_mod.split(full, config.test_size, config.seed)
    train, test = time_split(events.assign(_row=range(len(events))), config.test_size)
    return Split(
        full.subset(train["_row"].tolist(), f"{path} (before {test[TIMESTAMP].iloc[0]})", []),
        full.subset(test["_row"].tolist(), f"{path} (from {test[TIMESTAMP].iloc[0]})", []),
    )


def entity_matrix(events: pd.DataFrame, settings: Settings) -> np.ndarray:
    """Write the events' aggregates to the offline store and read each event's features as
    of just before it: one row per event, columns `FEATURES`."""
    from sentiment_mlops.features.repository import (
        historical_features,
        open_repository,
        write_offline,
    )

    repository = open_repository(settings)
    write_offline(repository, events)
    entity_rows = pd.DataFrame(
        {
            EVENT_ID: events[EVENT_ID].to_numpy(dtype=object),
            USER: events[USER].to_numpy(dtype=object),
            ACCOUNT: events[ACCOUNT].to_numpy(dtype=object),
            TIMESTAMP: events[TIMESTAMP] - AS_OF_OFFSET,
        }
    )
    joined = historical_features(repository, entity_rows)
    return joined[list(FEATURES)].to_numpy(dtype=np.float64)
