"""The Feast feature repository: definitions, config from Settings, retrieval, materialising.

The repository's `feature_store.yaml` is generated from `Settings` into
`Settings.feature_repo_dir()` (by default `var/features/`), so the `feast` command line works
on it too (`cd var/features && feast feature-views list`). Offline: Parquet files there, one
per feature view, read by Feast's file offline store. Online: SQLite in the same folder by
default, Redis (`SENTIMENT_FEATURES_ONLINE_STORE=redis`, `SENTIMENT_FEATURES_REDIS`) in
production. The only module that imports feast.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

from sentiment_mlops.config import Settings
from sentiment_mlops.features.aggregates import (
    ACCOUNT_FEATURES,
    ACCOUNT_VIEW,
    DEFAULTS,
    FEATURE_SERVICE,
    FEATURES,
    USER_FEATURES,
    USER_VIEW,
    account_rows,
    user_rows,
)
from sentiment_mlops.features.events import ACCOUNT, TIMESTAMP, USER

FEATURE_REFS: tuple[str, ...] = (
    *(f"{USER_VIEW}:{name}" for name in USER_FEATURES),
    *(f"{ACCOUNT_VIEW}:{name}" for name in ACCOUNT_FEATURES),
)


class FeatureStoreError(RuntimeError):
    """The feature store cannot do what was asked; the message says why."""


@dataclass(frozen=True)
class Repository:
    """A Feast store built from Settings, and where its offline Parquet files are."""

    store: FeatureStore
    directory: Path

    def parquet(self, view: str) -> Path:
        return self.directory / "data" / f"{view}.parquet"


def write_config(settings: Settings) -> Path:
    """Generate `feature_store.yaml` from settings; return the repository's folder."""
    directory = settings.feature_repo_dir()
    (directory / "data").mkdir(parents=True, exist_ok=True)
    online: dict[str, Any]
    if settings.features_online_store == "redis":
        online = {"type": "redis", "connection_string": settings.features_redis}
    else:
        online = {"type": "sqlite", "path": str(directory / "online.db")}
    config = {
        "project": settings.features_project,
        "provider": "local",
        "registry": str(directory / "registry.db"),
        "online_store": online,
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    (directory / "feature_store.yaml").write_text(
        "# Generated from SENTIMENT_FEATURES_* settings by sentiment_mlops.features; "
        "edits are overwritten.\n" + yaml.safe_dump(config, sort_keys=False),
        encoding="utf-8",
    )
    return directory


def open_repository(settings: Settings) -> Repository:
    """The store over the generated config, with the definitions applied."""
    directory = write_config(settings)
    repository = Repository(FeatureStore(repo_path=str(directory)), directory)
    repository.store.apply(list(definitions(repository)))
    return repository


def definitions(repository: Repository) -> tuple[Any, ...]:
    """Entities, feature views and the feature service, over this repository's Parquet."""
    user = Entity(name="user", join_keys=[USER], value_type=ValueType.STRING)
    account = Entity(name="account", join_keys=[ACCOUNT], value_type=ValueType.STRING)
    user_view = FeatureView(
        name=USER_VIEW,
        entities=[user],
        # The author's whole history counts, however old: no TTL (0 means none in Feast).
        ttl=timedelta(0),
        schema=[_field(name) for name in USER_FEATURES],
        source=FileSource(
            name=f"{USER_VIEW}_source",
            path=str(repository.parquet(USER_VIEW)),
            timestamp_field=TIMESTAMP,
        ),
        online=True,
    )
    account_view = FeatureView(
        name=ACCOUNT_VIEW,
        entities=[account],
        # The 24 h window is in the rows (aggregates.account_rows writes the moment an event
        # leaves it); the TTL only bounds how stale a row may be read, beyond any real gap.
        ttl=timedelta(0),
        schema=[_field(name) for name in ACCOUNT_FEATURES],
        source=FileSource(
            name=f"{ACCOUNT_VIEW}_source",
            path=str(repository.parquet(ACCOUNT_VIEW)),
            timestamp_field=TIMESTAMP,
        ),
        online=True,
    )
    service = FeatureService(name=FEATURE_SERVICE, features=[user_view, account_view])
    return user, account, user_view, account_view, service


def _field(name: str) -> Field:
    return Field(name=name, dtype=Int64 if name.endswith(("_tweets", "_tweets_24h")) else Float64)


def write_offline(repository: Repository, events: pd.DataFrame) -> None:
    """Compute the feature rows from events and replace the offline Parquet files."""
    for view, rows in ((USER_VIEW, user_rows(events)), (ACCOUNT_VIEW, account_rows(events))):
        path = repository.parquet(view)
        tmp = path.with_suffix(".parquet.tmp")
        rows.to_parquet(tmp, index=False)
        tmp.replace(path)


def historical_features(repository: Repository, entity_rows: pd.DataFrame) -> pd.DataFrame:
    """Feast's point-in-time join: per entity row (`user_id`, `account`, `event_timestamp`,
    any other columns kept), the features as of that time; rows without any earlier feature
    row get the defaults. Rows come back in the order given.

    Each view is asked on its own, for the distinct (join key, time) pairs: Feast 0.67's
    file store drops entity rows that repeat one view's key and time while differing in
    another's (measured: of (bob, United) and (bob, Delta) at one time only one came back),
    so a frame of both keys lost rows. The answers are joined back onto every row given.
    """
    missing = [c for c in (USER, ACCOUNT, TIMESTAMP) if c not in entity_rows.columns]
    if missing:
        raise FeatureStoreError(f"entity rows need the columns {', '.join(missing)}")
    out = entity_rows.reset_index(drop=True)
    out[TIMESTAMP] = pd.to_datetime(out[TIMESTAMP], utc=True)
    for view, key, names in (
        (USER_VIEW, USER, USER_FEATURES),
        (ACCOUNT_VIEW, ACCOUNT, ACCOUNT_FEATURES),
    ):
        pairs = out[[key, TIMESTAMP]].drop_duplicates().reset_index(drop=True)
        joined = repository.store.get_historical_features(
            entity_df=pairs, features=[f"{view}:{name}" for name in names]
        ).to_df()
        joined[TIMESTAMP] = pd.to_datetime(joined[TIMESTAMP], utc=True)
        found = joined[[key, TIMESTAMP, *names]].drop_duplicates([key, TIMESTAMP])
        out = out.merge(found, on=[key, TIMESTAMP], how="left", validate="many_to_one")
    return fill_defaults(out)


def fill_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing feature values (no row yet for the entity) set to the training defaults."""
    out = frame.copy()
    for name in FEATURES:
        out[name] = (
            pd.to_numeric(out[name], errors="coerce").astype("float64").fillna(DEFAULTS[name])
        )
    return out


def materialize(repository: Repository, end: datetime) -> None:
    """Push each entity's latest feature row at or before `end` into the online store."""
    repository.store.materialize(start_date=datetime.fromtimestamp(0).astimezone(), end_date=end)


def online_features(repository: Repository, rows: list[dict[str, str]]) -> list[dict[str, float]]:
    """The online store's features for entity rows (`user_id`, `account`); an entity it
    does not hold gets the defaults."""
    service = repository.store.get_feature_service(FEATURE_SERVICE)
    found = repository.store.get_online_features(features=service, entity_rows=rows).to_dict()
    return [
        {
            name: DEFAULTS[name] if found[name][i] is None else float(found[name][i])
            for name in FEATURES
        }
        for i in range(len(rows))
    ]
