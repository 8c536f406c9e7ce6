"""Entity features for a model trained with them, read per request from the feature store's
online store, in bounded time, with defaults when they cannot be had.

A model trained with `--features` scores each text with its author's and its addressed
account's features (features/aggregates.py). The request names them (`user_id`, `account`);
this module asks the online store (SQLite or Redis, `SENTIMENT_FEATURES_*`) for them in a
thread pool of its own and waits at most `SENTIMENT_FEATURES_LOOKUP_TIMEOUT_SECONDS`, so a
slow or frozen store never holds the event loop nor the request longer than that. Redis
connects and reads are bounded by twice that time and not retried, so a thread stuck on a
frozen server returns by itself.

Defaults, per entity, and why:

- `unknown_entity`: the store answered and holds nothing for the key. That is an entity with
  no history, which training saw as zero tweets and zero shares (`aggregates.DEFAULTS`): the
  same values here, so a new author is scored exactly as training scored one.
- `no_key` (the request did not name the entity), `unavailable` (the store or its registry
  failed) and `timeout`: nothing is known, so the entity's columns get the model's training
  means (saved with the model in its scaler): standardised, they are 0 and add nothing to
  the decision, which leaves the text and the intercept to decide.

Each default is counted (`model_feature_defaults_total{variant, entity, reason}`) and named
in the response. Feast is imported only when the first model with entity features is
prepared: a server of text-only models never loads it (nor pandas).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from sentiment_mlops.config import Settings
from sentiment_mlops.serving.metrics import Metrics

log = logging.getLogger("sentiment_mlops.serving.entity_features")

DefaultReason = Literal["no_key", "unknown_entity", "unavailable", "timeout"]
Entity = Literal["user", "account"]


@dataclass(frozen=True)
class EntityKeys:
    """The entity keys of one request: the author (`user_id`) and the addressed account."""

    user_id: str | None = None
    account: str | None = None

    def of(self, entity: Entity) -> str | None:
        return self.user_id if entity == "user" else self.account


@dataclass(frozen=True)
class EntityRow:
    """The values one request is scored with, in the model's column order, and which
    entities got defaults instead of the store's values, with why."""

    values: np.ndarray
    defaults: dict[Entity, DefaultReason] = field(default_factory=dict)

    @property
    def source(self) -> Literal["online", "defaults"]:
        return "defaults" if self.defaults else "online"


class Reader(Protocol):
    """An open online store for one model's features (features/repository.OnlineReader)."""

    def read(self, user_id: str | None, account: str | None) -> dict[str, float | None]:
        """The named features for one entity row; None where the store holds no value."""
        ...


ReaderFactory = Callable[[tuple[str, ...]], Reader]


class _Columns:
    """A model's entity columns: which entity each belongs to, its no-history value and its
    training mean."""

    def __init__(self, names: tuple[str, ...], means: Sequence[float]) -> None:
        from sentiment_mlops.features.aggregates import ACCOUNT_FEATURES, DEFAULTS, USER_FEATURES

        unknown = [n for n in names if n not in USER_FEATURES and n not in ACCOUNT_FEATURES]
        if unknown:
            raise ValueError(f"entity features no feature view serves: {', '.join(unknown)}")
        self.names = names
        self.entity: list[Entity] = ["user" if n in USER_FEATURES else "account" for n in names]
        self.no_history = np.array([DEFAULTS[n] for n in names], dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64)

    def entities(self) -> list[Entity]:
        return list(dict.fromkeys(self.entity))


class OnlineFeatures:
    """Reads models' entity features from the online store for requests, never failing them."""

    def __init__(
        self,
        open_reader: ReaderFactory,
        metrics: Metrics,
        timeout_seconds: float,
        open_timeout_seconds: float = 120.0,
    ) -> None:
        """`open_reader(names)` opens the store for those features (blocking; run in this
        object's threads); a model waits for it at most `open_timeout_seconds` before it
        serves (`prepare`), each request at most `timeout_seconds` for its lookup."""
        self._open_reader = open_reader
        self._metrics = metrics
        self._timeout = timeout_seconds
        self._open_timeout = open_timeout_seconds
        # Two threads: one lookup may wait on a slow store while the next one runs.
        self._threads = ThreadPoolExecutor(2, thread_name_prefix="features")
        self._readers: dict[tuple[str, ...], Reader] = {}
        self._opening = threading.Lock()
        self._columns: dict[tuple[tuple[str, ...], tuple[float, ...]], _Columns] = {}
        self._state: str = "ok"  # the last outcome logged: ok, or why lookups fail

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics) -> OnlineFeatures:
        timeout = settings.features_lookup_timeout_seconds

        def open_reader(names: tuple[str, ...]) -> Reader:
            from sentiment_mlops.features.repository import OnlineReader

            # Twice the wait: the wait ends first and tells a store too slow ("timeout")
            # from one that fails; the socket's own bound frees the thread soon after.
            return OnlineReader(settings, names, socket_timeout=2 * timeout)

        return cls(open_reader, metrics, timeout, settings.model_load_timeout_seconds)

    async def prepare(self, names: tuple[str, ...]) -> None:
        """Open the store for a newly loaded model's features before the model serves, so
        its first requests get the store's values (opening imports Feast and reads the
        feature service from the registry: seconds, far above a lookup's timeout). Called
        once per model load, never per request. Failing or taking longer than the open
        timeout is only logged: the model serves, lookups try again (or find it opened by
        then) and answer with defaults meanwhile."""
        if not names:
            return
        opening = asyncio.get_running_loop().run_in_executor(self._threads, self._reopen, names)
        try:
            await asyncio.wait_for(asyncio.shield(opening), self._open_timeout)
        except TimeoutError:
            log.warning(
                "feature store still opening; the model serves with default features meanwhile",
                extra={"timeout_seconds": self._open_timeout},
            )

    def _reopen(self, names: tuple[str, ...]) -> None:
        try:
            with self._opening:
                self._readers[names] = self._open_reader(names)
        except Exception as exc:  # logged; requests get defaults until it opens
            self._note("unavailable", exc)

    def _reader(self, names: tuple[str, ...]) -> Reader:
        reader = self._readers.get(names)
        if reader is None:
            with self._opening:
                reader = self._readers.get(names)
                if reader is None:
                    reader = self._readers[names] = self._open_reader(names)
        return reader

    def _read(self, names: tuple[str, ...], keys: EntityKeys) -> dict[str, float | None]:
        return self._reader(names).read(keys.user_id, keys.account)

    async def lookup(
        self,
        variant: str,
        names: tuple[str, ...],
        means: tuple[float, ...],
        keys: EntityKeys,
    ) -> EntityRow:
        """The values to score one request with: the store's, or defaults (counted)."""
        columns = self._columns_of(names, means)
        given = [e for e in columns.entities() if keys.of(e)]
        found: dict[str, float | None] = {}
        failure: DefaultReason | None = None
        if given:
            loop = asyncio.get_running_loop()
            job = loop.run_in_executor(self._threads, functools.partial(self._read, names, keys))
            try:
                found = await asyncio.wait_for(job, self._timeout)
                self._note("ok")
            except TimeoutError:
                failure = "timeout"
                self._note("timeout")
            except Exception as exc:  # any store failure is a default, never a 500
                failure = "unavailable"
                self._note("unavailable", exc)
        values = columns.means.copy()
        defaults: dict[Entity, DefaultReason] = {}
        for entity in columns.entities():
            at = [i for i, e in enumerate(columns.entity) if e == entity]
            if not keys.of(entity):
                defaults[entity] = "no_key"
            elif failure is not None:
                defaults[entity] = failure
            elif all(found.get(columns.names[i]) is None for i in at):
                defaults[entity] = "unknown_entity"
                values[at] = columns.no_history[at]
            else:
                for i in at:
                    value = found.get(columns.names[i])
                    values[i] = columns.no_history[i] if value is None else value
        for entity, reason in defaults.items():
            self._metrics.feature_defaults.labels(variant, entity, reason).inc()
        return EntityRow(values, defaults)

    def _columns_of(self, names: tuple[str, ...], means: tuple[float, ...]) -> _Columns:
        columns = self._columns.get((names, means))
        if columns is None:
            columns = self._columns[(names, means)] = _Columns(names, means)
        return columns

    def _note(self, state: str, exc: BaseException | None = None) -> None:
        """Log when lookups start or stop failing, once per change, not per request."""
        if state == self._state:
            return
        self._state = state
        if state == "ok":
            log.info("feature store answers again")
        else:
            error = f"{type(exc).__name__}: {exc}" if exc is not None else None
            log.warning(
                "feature store lookups fail; answering with default features",
                extra={"reason": state, "error": error},
            )

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
