"""The prediction log's database: the engine, the schema's migrations, and every statement
the server runs on it (writing predictions, deleting expired ones, joining feedback).

SQLite by default (a file under `var/`), PostgreSQL in production:
- SQLite runs in WAL mode (readers never wait for the writer) with a busy timeout, and every
  transaction starts with `BEGIN IMMEDIATE`, so several workers writing the same file queue
  for its lock instead of failing on a read transaction that cannot become a write one.
- PostgreSQL gets the driver's connect and statement timeouts (`databases.with_driver_timeouts`)
  and TCP keepalives, so a stopped or unreachable server fails a call instead of hanging the
  thread that made it; pooled connections are checked before use, so they survive a restart.
- Migrations (Alembic, in `serving/migrations/`) run to head inside one transaction that holds a
  lock (SQLite: the write lock; PostgreSQL: an advisory lock), so workers starting together
  migrate once. Their version is kept in `prediction_log_version`, not `alembic_version`,
  so the log can share a database with MLflow's store.
- Writing a prediction twice (a batch retried after its commit was lost) keeps the first row.
- A batch of predictions is one INSERT statement, not one per row: a statement per row gives
  up the GIL and must win it back from the event loop each time (pysqlite steps once per row;
  psycopg2's executemany makes a round trip per row). Measured under load, the writer spent
  ~150 µs a row doing so, and `/predict` lost 20-25% of its throughput. On PostgreSQL that
  takes SQLAlchemy's multi-row VALUES pages, which it uses for an `ON CONFLICT` insert only
  when it returns something (sqlalchemy#13130), hence the RETURNING; SQLite's is ours.

SQL and driver errors come out as SQLAlchemy's exceptions; what feedback cannot be joined
comes out as a `FeedbackRefused` saying why.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, Table, create_engine, delete, event, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.sql.dml import Insert

from sentiment_mlops.databases import url_scheme, with_driver_timeouts
from sentiment_mlops.serving.predictions import feedback, predictions

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "prediction_log_version"
# PostgreSQL advisory lock held while migrating (any fixed 64-bit number of our own).
MIGRATION_LOCK = 0x5E171E47_0000_0001
# Rows per INSERT statement on SQLite: 13 parameters each, well within SQLite's 32,766.
SQLITE_ROWS_PER_STATEMENT = 500


class FeedbackRefused(Exception):
    """Feedback the log cannot take; the message says why."""


class UnknownPrediction(FeedbackRefused):
    """No such prediction in the log."""


class PredictionExpired(FeedbackRefused):
    """The prediction is older than the log's retention: its row is gone."""


class ShadowPrediction(FeedbackRefused):
    """The prediction was made in shadow; feedback belongs to the primary one."""


class UnknownLabel(FeedbackRefused):
    """The label is not one of the classes of the model version that made the prediction."""


class ConflictingFeedback(FeedbackRefused):
    """The prediction already has feedback with another label."""


@dataclass(frozen=True)
class Feedback:
    """Feedback joined to its prediction; `new` is false for a repeat of stored feedback."""

    prediction_id: str
    label: str
    received_at: datetime
    predicted_label: str
    model_version: int
    variant: str
    new: bool

    @property
    def correct(self) -> bool:
        return self.label == self.predicted_label


def alembic_config() -> Config:
    """Alembic's configuration for the log's migrations (no alembic.ini: they ship in the
    package)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


class LogDatabase:
    """The prediction log's database at `url`, each call bounded by `timeout_seconds` in the
    driver (PostgreSQL) or the busy timeout (SQLite)."""

    def __init__(self, url: str, timeout_seconds: float) -> None:
        self.url = url
        self.engine = _engine(url, timeout_seconds)
        dialect = self.engine.dialect
        self._columns = [column.name for column in predictions.c]
        self._bind = [
            column.type.dialect_impl(dialect).bind_processor(dialect) for column in predictions.c
        ]

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to `revision`; a no-op when it is there already."""
        self._alembic(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        """Take the schema back to `revision` (`base`: no tables at all)."""
        self._alembic(command.downgrade, revision)

    def _alembic(self, run: Any, revision: str) -> None:
        config = alembic_config()
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            config.attributes["connection"] = connection
            run(config, revision)

    def insert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write prediction rows in one transaction; rows whose id is there already are kept."""
        with self.engine.begin() as connection:
            if connection.dialect.name != "sqlite":
                returning = self._insert_new(predictions).returning(predictions.c.id)
                connection.execute(returning, list(rows)).all()
                return
            for start in range(0, len(rows), SQLITE_ROWS_PER_STATEMENT):
                chunk = rows[start : start + SQLITE_ROWS_PER_STATEMENT]
                values: list[Any] = []
                for row in chunk:
                    for name, bind in zip(self._columns, self._bind, strict=True):
                        value = row[name]
                        values.append(value if bind is None else bind(value))
                connection.exec_driver_sql(_sqlite_insert(len(chunk)), tuple(values))

    def delete_before(self, cutoff: datetime, limit: int) -> int:
        """Delete at most `limit` predictions made before `cutoff`, with their feedback; how
        many were deleted (fewer than `limit`: none older are left)."""
        with self.engine.begin() as connection:
            ids = (
                connection.execute(
                    select(predictions.c.id).where(predictions.c.created_at < cutoff).limit(limit)
                )
                .scalars()
                .all()
            )
            if ids:
                connection.execute(delete(feedback).where(feedback.c.prediction_id.in_(ids)))
                connection.execute(delete(predictions).where(predictions.c.id.in_(ids)))
        return len(ids)

    def add_feedback(self, prediction_id: str, label: str, received_at: datetime) -> Feedback:
        """Join `label` to the primary prediction `prediction_id`, once: a repeat of the same
        label returns the stored feedback; FeedbackRefused says why it cannot be joined."""
        p = predictions.c
        with self.engine.begin() as connection:
            row = connection.execute(
                select(p.label, p.probabilities, p.model_version, p.variant, p.shadow_of).where(
                    p.id == prediction_id
                )
            ).one_or_none()
            if row is None:
                raise UnknownPrediction(f"no prediction '{prediction_id}' in the log")
            if row.shadow_of is not None:
                raise ShadowPrediction(
                    f"prediction '{prediction_id}' was made in shadow, and no client was given "
                    f"its answer: send feedback for the primary prediction '{row.shadow_of}' "
                    "(the A/B report applies it to both)"
                )
            classes = list(row.probabilities)
            if label not in classes:
                raise UnknownLabel(
                    f"label {label!r} is not a class of model version {row.model_version}, "
                    f"which made prediction '{prediction_id}'; its classes: {', '.join(classes)}"
                )
            added = connection.execute(
                self._insert_new(feedback).values(
                    prediction_id=prediction_id, label=label, received_at=received_at
                )
            )
            stored = connection.execute(
                select(feedback.c.label, feedback.c.received_at).where(
                    feedback.c.prediction_id == prediction_id
                )
            ).one()
        stored_at = _utc(stored.received_at)
        if stored.label != label:
            raise ConflictingFeedback(
                f"prediction '{prediction_id}' already has the feedback {stored.label!r} "
                f"(received {stored_at.isoformat()}); feedback cannot be changed"
            )
        return Feedback(
            prediction_id=prediction_id,
            label=label,
            received_at=stored_at,
            predicted_label=row.label,
            model_version=row.model_version,
            variant=row.variant,
            new=added.rowcount == 1,
        )

    def _insert_new(self, table: Table) -> Insert:
        """An INSERT that skips rows whose primary key exists already."""
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        return sqlite.insert(table).on_conflict_do_nothing()

    def dispose(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()


@functools.lru_cache(maxsize=8)  # full batches, mostly
def _sqlite_insert(rows: int) -> str:
    """`INSERT INTO predictions … VALUES (?, …), … ON CONFLICT DO NOTHING` for `rows` rows
    (only a uniqueness conflict is skipped: a NULL where none may be still fails)."""
    columns = [column.name for column in predictions.c]
    one = f"({', '.join('?' * len(columns))})"
    return (
        f"INSERT INTO predictions ({', '.join(columns)}) VALUES {', '.join([one] * rows)} "
        "ON CONFLICT DO NOTHING"
    )


def _utc(value: datetime) -> datetime:
    """SQLite hands back the UTC times it was given without their zone."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _engine(url: str, timeout_seconds: float) -> Engine:
    if url_scheme(url) == "sqlite":
        return _sqlite_engine(url, timeout_seconds)
    keepalives = {
        "keepalives": 1,
        "keepalives_idle": max(1, math.ceil(timeout_seconds)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        # sent data unacknowledged this long (a server gone mid-statement) ends the call
        "tcp_user_timeout": math.ceil(timeout_seconds * 1000),
    }
    return create_engine(
        with_driver_timeouts(url, timeout_seconds),
        pool_pre_ping=True,
        hide_parameters=True,  # errors must not carry texts or hashes into logs
        connect_args=keepalives,
    )


def _create_private(path: Path) -> None:
    """Create the log's file readable by its owner only, if it does not exist yet: with
    `SENTIMENT_LOG_TEXTS` it holds what users wrote, and SQLite gives its -wal and -shm files
    the database file's permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _sqlite_engine(url: str, timeout_seconds: float) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        _create_private(Path(database))
    engine = create_engine(url, hide_parameters=True)
    busy_ms = math.ceil(timeout_seconds * 1000)

    @event.listens_for(engine, "connect")
    def configure(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # no implicit BEGIN from pysqlite: ours below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # in WAL mode: safe when a process crashes; a power cut may lose the last commits
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
