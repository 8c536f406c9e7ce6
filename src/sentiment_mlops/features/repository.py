"""The Feast feature repository: definitions, config from Settings, retrieval, materialising.

The repository's `feature_store.yaml` is generated from `Settings` into
`Settings.feature_repo_dir()` (by default `var/features/`), so the `feast` command line works
on it too (`cd var/features && feast feature-views list`). Offline: Parquet files there, one
per feature view, read by Feast's file offline store. Online: SQLite in the same folder by
default, Redis (`SENTIMENT_FEATURES_ONLINE_STORE=redis`, `SENTIMENT_FEATURES_REDIS`) in
production. The only module that imports feast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pandas as pd
import yaml

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
from sentiment_mlops.features.events import (
    ACCOUNT,
    EVENT_ID,
    LABEL,
    LABELLED_AT,
    TIMESTAMP,
    USER,
    prepare_events,
)
from sentiment_mlops.features.feast_import import feast_imported
from sentiment_mlops.subjects import subject_hash, subject_key

feast_imported()  # before `from feast import …`: see feast_import.py

from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource  # noqa: E402
from feast.errors import FeatureServiceNotFoundException  # noqa: E402
from feast.repo_config import RepoConfig  # noqa: E402
from feast.types import Float64, Int64  # noqa: E402
from feast.value_type import ValueType  # noqa: E402

EVENTS = "events"  # the events the feature rows are computed from (data/events.parquet)
STORED_COLUMNS = (EVENT_ID, TIMESTAMP, USER, ACCOUNT, LABEL, LABELLED_AT)
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


REGISTRY_VARIABLE = "SENTIMENT_FEATURES_REGISTRY"


def store_config(settings: Settings, socket_timeout: float | None = None) -> dict[str, Any]:
    """The repository's Feast config from settings. `socket_timeout` (seconds) bounds every
    Redis connect and read, so a thread reading a frozen Redis returns by itself (serving;
    a SQL registry is then read once, `registry_config`)."""
    directory = settings.feature_repo_dir()
    online: dict[str, Any]
    if settings.features_online_store == "redis":
        connection = settings.features_redis
        if socket_timeout is not None:
            connection += (
                f",socket_timeout={socket_timeout},socket_connect_timeout={socket_timeout}"
            )
        online = {"type": "redis", "connection_string": connection}
    else:
        online = {"type": "sqlite", "path": str(directory / "online.db")}
    return {
        "project": settings.features_project,
        "provider": "local",
        "registry": registry_config(settings, serving=socket_timeout is not None),
        "online_store": online,
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }


def registry_config(settings: Settings, *, serving: bool = False) -> str | dict[str, Any]:
    """Feast's registry: `registry.db` in the repository's folder, or with
    `features_registry` a SQL registry every process shares (the API's pods read there what
    the materialising job applied).

    A server reads a SQL registry once, when it opens the store for a model (TTL 0: Feast's
    cache never expires), as it reads the feature service: no lookup waits on the database,
    and no thread refreshes definitions that change only with a new model. Feast's
    docs say a job materialising marks the view MATERIALIZING in a shared registry and
    servers then refuse it; in Feast 0.67 that state change is not written (a feature view's
    equality ignores its state, so the SQL registry skips the write: a view set to
    MATERIALIZING and applied read back unchanged here). Should a later Feast write it, the
    online store still holds the last values, so `serve_features_while_materializing` keeps
    serving them (tests/features/test_serving.py writes the mark and checks).
    """
    if settings.features_registry is None:
        return str(settings.feature_repo_dir() / "registry.db")
    engine: dict[str, Any] = {"echo": False, "pool_pre_ping": True}
    if settings.features_registry.startswith("postgresql"):
        # A database that does not answer fails the connect in bounded time, not the TCP one.
        timeout = max(1, round(settings.database_timeout_seconds))
        engine["connect_args"] = {"connect_timeout": timeout}
    config: dict[str, Any] = {
        "registry_type": "sql",
        "path": settings.features_registry,
        "serve_features_while_materializing": True,
        "sqlalchemy_config_kwargs": engine,
    }
    if serving:
        config["cache_ttl_seconds"] = 0
    return config


def write_config(settings: Settings) -> Path:
    """Generate `feature_store.yaml` from settings; return the repository's folder."""
    directory = settings.feature_repo_dir()
    (directory / "data").mkdir(parents=True, exist_ok=True)
    config = store_config(settings)
    if isinstance(config["registry"], dict):
        # The URL may hold a password: the file names the variable, Feast expands it.
        config["registry"] = {**config["registry"], "path": f"${{{REGISTRY_VARIABLE}}}"}
    (directory / "feature_store.yaml").write_text(
        "# Generated from SENTIMENT_FEATURES_* settings by sentiment_mlops.features; "
        "edits are overwritten.\n" + yaml.safe_dump(config, sort_keys=False),
        encoding="utf-8",
    )
    return directory


def open_repository(settings: Settings) -> Repository:
    """The store over the generated config, with the definitions applied."""
    directory = write_config(settings)
    config = RepoConfig(**store_config(settings))
    repository = Repository(FeatureStore(repo_path=str(directory), config=config), directory)
    repository.store.apply(list(definitions(repository)))
    return repository


def definitions(repository: Repository) -> tuple[Any, ...]:
    """Entities, feature views and the feature service, over this repository's Parquet."""
    user = Entity(name="user", join_keys=[USER], value_type=ValueType.STRING)
    account = Entity(name="account", join_keys=[ACCOUNT], value_type=ValueType.STRING)
    # No TTL on either view (0 means none in Feast): the author's whole history counts,
    # however old, and the account's 24 h window is in its rows (aggregates.account_rows
    # writes the moment an event leaves it), so a TTL would only bound how stale a row may be
    # read, beyond any real gap.
    user_view = _file_view(repository, USER_VIEW, user, USER_FEATURES)
    account_view = _file_view(repository, ACCOUNT_VIEW, account, ACCOUNT_FEATURES)
    service = FeatureService(name=FEATURE_SERVICE, features=[user_view, account_view])
    return user, account, user_view, account_view, service


def _file_view(
    repository: Repository, name: str, entity: Entity, features: Sequence[str]
) -> FeatureView:
    """An online feature view of `features` keyed by `entity`, over the view's Parquet file."""
    return FeatureView(
        name=name,
        entities=[entity],
        ttl=timedelta(0),
        schema=[_field(feature) for feature in features],
        source=FileSource(
            name=f"{name}_source",
            path=str(repository.parquet(name)),
            timestamp_field=TIMESTAMP,
        ),
        online=True,
    )


def _field(name: str) -> Field:
    return Field(name=name, dtype=Int64 if name.endswith(("_tweets", "_tweets_24h")) else Float64)


def write_offline(repository: Repository, events: pd.DataFrame) -> None:
    """Make `events` the repository's events (kept in `events.parquet`, without texts) and
    replace the offline Parquet files with the feature rows computed from them."""
    kept = events[[c for c in STORED_COLUMNS if c in events.columns]]
    _write_parquet(kept, repository.parquet(EVENTS))
    for view, rows in ((USER_VIEW, user_rows(events)), (ACCOUNT_VIEW, account_rows(events))):
        _write_parquet(rows, repository.parquet(view))


def add_events(repository: Repository, events: pd.DataFrame) -> int:
    """Add `events` to those the repository holds and recompute the offline feature rows
    from all of them; how many events it then holds. An id it holds already is replaced by
    the new read (a prediction that has since got feedback). Every row for a time before
    the new events stays as it was, so this appends, and adding the same events again
    changes nothing."""
    path = repository.parquet(EVENTS)
    if path.exists():
        held = pd.read_parquet(path)
        new = events[[c for c in STORED_COLUMNS if c in events.columns]]
        events = pd.concat([held, new], ignore_index=True)
        events = events[~events[EVENT_ID].duplicated(keep="last")]
        events = prepare_events(events, str(path), complete=False)
    write_offline(repository, events)
    return len(events)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    frame.to_parquet(tmp, index=False)
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


class OnlineReader:
    """Serving's read path: the online store and the feature service, fetched once.

    Opening reads Feast's registry (the definitions `open_repository` applied) and takes the
    feature service from it; each `read` then asks the online store only. Fetching the
    service on every call, as `online_features` does, cost ~3 ms (SQLite) to ~6 ms (Redis) of
    registry reads per lookup here, ten times the lookup itself. Never writes: a server does
    not apply definitions, so a repository nobody has applied is an error, not an empty one.
    Users are looked up by their `subject_hash` under the settings' subject key, the key the
    server's prediction log hashes them with.
    """

    def __init__(self, settings: Settings, names: Sequence[str], socket_timeout: float) -> None:
        self._subject_key = subject_key(settings)
        directory = settings.feature_repo_dir()
        if settings.features_registry is None and not (directory / "registry.db").exists():
            raise FeatureStoreError(
                f"no feature repository at {directory} (train with --features or run "
                "`sentiment features materialize` first)"
            )
        config = RepoConfig(**store_config(settings, socket_timeout))
        self.store = FeatureStore(repo_path=str(directory), config=config)
        try:
            self.service = self.store.get_feature_service(FEATURE_SERVICE)
        except FeatureServiceNotFoundException as exc:
            raise FeatureStoreError(
                f"the registry holds no feature service {FEATURE_SERVICE} for project "
                f"{settings.features_project} (train with --features or run `sentiment "
                "features materialize` first)"
            ) from exc
        served = {
            feature.name
            for projection in self.service.feature_view_projections
            for feature in projection.features
        }
        missing = [name for name in names if name not in served]
        if missing:
            raise FeatureStoreError(
                f"the feature service {FEATURE_SERVICE} does not serve {', '.join(missing)}"
            )
        self.names = tuple(names)
        if settings.features_online_store == "redis":
            _without_retries(self.store)

    def read(self, user_id: str | None, account: str | None) -> dict[str, float | None]:
        """The model's features for one entity row (`user_id` as the request gave it: it is
        looked up by its `subject_hash` under the subject key); None where the store holds no
        value (an entity it does not know, or a key not given)."""
        # A key not given is asked as "", which no entity has: its features come back None.
        user = subject_hash(user_id, self._subject_key) if user_id else ""
        row = {USER: user, ACCOUNT: account or ""}
        found = self.store.get_online_features(features=self.service, entity_rows=[row])
        values = found.to_dict()
        return {
            name: None if values.get(name, [None])[0] is None else float(values[name][0])
            for name in self.names
        }


def _without_retries(store: FeatureStore) -> None:
    """Make the store's Redis client fail at once instead of retrying.

    redis-py retries a refused or timed-out call three times with backoff (a refused
    connection took 3.9 s here), far beyond a lookup's budget of milliseconds: each lookup of
    a down Redis would hold a thread for seconds. Serving answers with defaults instead and
    tries again on the next request. Feast builds its client from the connection string,
    which cannot express a retry policy, so the pool's connection arguments are set here,
    before any connection exists (tests/features/test_serving.py fails if this stops
    working: a down store would then be reported as a timeout).
    """
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    online = store._get_provider().online_store
    client = cast(Any, online)._get_client(store.config.online_store)
    client.connection_pool.connection_kwargs["retry"] = Retry(NoBackoff(), 0)
