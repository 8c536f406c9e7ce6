"""The prediction log on SQLite: migrations build exactly the tables `predictions.py` defines
(and can be undone), the file is in WAL mode, several writers (as several workers would) share
it, a retried batch is written once, and old rows expire."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import func, inspect, select

from sentiment_mlops.config import Settings
from sentiment_mlops.serving.log_database import VERSION_TABLE, LogDatabase
from sentiment_mlops.serving.metrics import Metrics
from sentiment_mlops.serving.prediction_log import PredictionLog, prediction_row
from sentiment_mlops.serving.predictions import metadata, predictions

from ..apps import eventually
from ..prediction_events import BOUND, SUBJECT_KEY, event

TABLES = {"predictions", "feedback", VERSION_TABLE}


def database(path: Path) -> LogDatabase:
    return LogDatabase(f"sqlite:///{path}", timeout_seconds=BOUND)


def ids_in(db: LogDatabase) -> list[str]:
    with db.engine.connect() as connection:
        return sorted(connection.execute(select(predictions.c.id)).scalars())


def test_migrations_build_the_tables_of_the_contract_and_can_be_undone(tmp_path: Path) -> None:
    db = database(tmp_path / "var" / "predictions.db")
    db.migrate()
    db.migrate()  # at head already: nothing to do
    assert set(inspect(db.engine).get_table_names()) == TABLES
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        assert context.get_current_revision() == "0002"
        assert compare_metadata(context, metadata) == [], "migrations differ from predictions.py"
    db.downgrade("base")
    assert set(inspect(db.engine).get_table_names()) == {VERSION_TABLE}
    db.migrate()
    assert set(inspect(db.engine).get_table_names()) == TABLES
    db.dispose()


def test_0002_adds_the_account_to_a_log_with_rows_and_takes_it_back(tmp_path: Path) -> None:
    db = database(tmp_path / "predictions.db")
    db.migrate("0001")
    old = prediction_row(event(), keep_text=False, subject_key=SUBJECT_KEY)
    del old["account"]
    with db.engine.begin() as connection:
        connection.execute(predictions.insert().values(**{k: old[k] for k in old}))
    db.migrate()
    db.insert([prediction_row(event(account="@united"), keep_text=False, subject_key=SUBJECT_KEY)])
    with db.engine.connect() as connection:
        accounts = dict(connection.execute(select(predictions.c.id, predictions.c.account)).all())
    assert sorted(accounts.values(), key=str) == ["@united", None]
    assert accounts[old["id"]] is None, "earlier rows have no account"
    db.downgrade("0001")
    columns = {c["name"] for c in inspect(db.engine).get_columns("predictions")}
    assert "account" not in columns and "subject_hash" in columns
    assert len(ids_in_table(db)) == 2, "the rows survive the way back"
    db.dispose()


def ids_in_table(db: LogDatabase) -> list[str]:
    with db.engine.connect() as connection:
        return list(connection.exec_driver_sql("SELECT id FROM predictions").scalars())


def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "predictions.db"
    db = database(path)
    db.migrate()
    db.dispose()
    with sqlite3.connect(path) as raw:  # WAL is a property of the file, not of our connections
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_the_file_and_its_wal_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    """With texts logged the file holds what users wrote; the umask here would give 0644."""
    path = tmp_path / "log" / "predictions.db"
    old_umask = os.umask(0o022)
    try:
        db = database(path)
        db.migrate()
        db.insert([prediction_row(event(), keep_text=False, subject_key=SUBJECT_KEY)])
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
        db.dispose()
    finally:
        os.umask(old_umask)
    assert modes["predictions.db"] == 0o600
    assert {name: mode for name, mode in modes.items() if mode != 0o600} == {}


def test_workers_migrating_and_writing_the_same_file_at_once_lose_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "predictions.db"
    writers = [
        PredictionLog(
            database(path),
            Metrics(),
            queue_size=10_000,
            keep_texts=True,
            subject_key=SUBJECT_KEY,
            retention_days=90,
            timeout_seconds=BOUND,
            flush_seconds=BOUND,
            batch_rows=7,
        )
        for _ in range(4)
    ]
    made: list[str] = []
    for writer in writers:
        writer.start()

    def produce(writer: PredictionLog) -> None:
        for _ in range(150):
            e = event()
            writer.record([e])
            made.append(e.prediction_id)

    producers = [threading.Thread(target=produce, args=(w,)) for w in writers]
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join(BOUND)
    for writer in writers:
        assert writer.flush(BOUND)
        assert writer.health() == "ok"
        writer.close()
    assert ids_in(database(path)) == sorted(made)


def test_a_batch_written_twice_is_kept_once(tmp_path: Path) -> None:
    """A batch whose commit reached the database but whose answer was lost is retried."""
    db = database(tmp_path / "predictions.db")
    db.migrate()
    rows = [prediction_row(event(), keep_text=False, subject_key=SUBJECT_KEY) for _ in range(3)]
    db.insert(rows)
    db.insert([*rows, prediction_row(event(), keep_text=False, subject_key=SUBJECT_KEY)])
    with db.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(predictions)).scalar() == 4


def test_the_writer_deletes_rows_older_than_the_retention(tmp_path: Path) -> None:
    db = database(tmp_path / "predictions.db")
    log = PredictionLog(
        db,
        Metrics(),
        queue_size=100,
        keep_texts=False,
        subject_key=SUBJECT_KEY,
        retention_days=30,
        timeout_seconds=BOUND,
        flush_seconds=BOUND,
        expiry_every_seconds=0.05,
    )
    now = datetime.now(UTC)

    def made(days_ago: float) -> str:
        when = now - timedelta(days=days_ago)
        old = event(created_at=when)
        log.record([old])
        return old.prediction_id

    db.migrate()  # so that the test can read the table before the writer has written
    try:
        log.start()
        fresh = [made(0), made(29)]
        made(31)
        eventually(lambda: ids_in(db) == sorted(fresh), "the 31-day-old row deleted")
        made(400)  # a later pass deletes what has expired since
        kept = made(1)
        eventually(lambda: ids_in(db) == sorted([*fresh, kept]), "the next pass")
    finally:
        log.close()


@pytest.mark.parametrize("url", ["mysql+pymysql://db/log", "postgresql://db/log"])
def test_only_databases_the_log_supports_are_accepted(url: str) -> None:
    with pytest.raises(ValidationError, match=r"sqlite or postgresql\+psycopg2 URL"):
        Settings(database_url=url)


def test_a_row_sqlite_refuses_is_dropped_alone_and_the_rest_written(tmp_path: Path) -> None:
    """Duplicates are skipped, but a NULL where none may be still fails its statement."""
    db = database(tmp_path / "predictions.db")
    metrics = Metrics()
    log = PredictionLog(
        db,
        metrics,
        queue_size=100,
        keep_texts=False,
        subject_key=SUBJECT_KEY,
        retention_days=90,
        timeout_seconds=BOUND,
        flush_seconds=BOUND,
    )
    good = [event() for _ in range(4)]
    bad = event(label=None)
    log.record([*good[:2], bad, *good[2:]])
    log.start()
    try:
        assert log.flush(BOUND)
    finally:
        log.close()
    assert ids_in(db) == sorted(e.prediction_id for e in good)
    rejected = {"reason": "rejected"}
    assert metrics.registry.get_sample_value("prediction_log_dropped_total", rejected) == 1


def inserts_sent(db: LogDatabase, rows: int) -> list[int]:
    """How many rows each INSERT handed to the driver carries while `rows` rows are written."""
    sent: list[int] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any) -> None:
        if statement.startswith("INSERT INTO predictions"):
            sent.append(statement.count("), (") + 1)

    sqlalchemy_event.listen(db.engine, "before_cursor_execute", seen)
    db.insert(
        [prediction_row(event(), keep_text=False, subject_key=SUBJECT_KEY) for _ in range(rows)]
    )
    sqlalchemy_event.remove(db.engine, "before_cursor_execute", seen)
    return sent


def test_a_batch_is_one_statement_not_one_per_row(tmp_path: Path) -> None:
    """pysqlite's executemany steps once per row, each time taking the GIL back from the
    event loop: that cost /predict a fifth of its throughput (see log_database.py)."""
    db = database(tmp_path / "predictions.db")
    db.migrate()
    assert inserts_sent(db, 300) == [300]
    assert inserts_sent(db, 1201) == [500, 500, 201]
