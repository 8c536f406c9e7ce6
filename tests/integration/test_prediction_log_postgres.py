"""The prediction log on a real PostgreSQL that goes away under load.

The cluster is the test's own (its port and data directory; see postgres_cluster.py), so it
can be stopped with `pg_ctl stop -m immediate` like a crash and started again on the same
port, or frozen with SIGSTOP, while a real `sentiment serve` takes traffic with
SENTIMENT_DATABASE_URL pointed at it. What must hold: every prediction the API answered 2xx
is in the log afterwards; with a queue too small to ride out the outage, the dropped counter
equals the predictions missing from the log, exactly; and while the database is frozen,
`/ready` says so.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sklearn.pipeline import Pipeline
from sqlalchemy import inspect
from sqlalchemy.exc import ProgrammingError

from sentiment_mlops.serving.app import create_app
from sentiment_mlops.serving.launcher import ServerProcess
from sentiment_mlops.serving.log_database import VERSION_TABLE, LogDatabase
from sentiment_mlops.serving.predictions import metadata

from ..apps import api_settings, bearer, eventually, ready_client
from ..fakes import FakeSource
from ..prediction_events import logged_rows
from ..unit.test_log_database import inserts_sent
from .postgres_cluster import Cluster, missing
from .server import Traffic, register_into, serving, start_server, wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(missing() is not None, reason=str(missing())),
]

OUTAGE_SECONDS = 10
CLIENTS = 3
DATABASE_TIMEOUT = 2.0
# How long a test waits for the log's state to change after a freeze or a thaw: the database
# timeout the log's health is measured against, plus a margin for a loaded machine.
STATE_BOUND = DATABASE_TIMEOUT + 30


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    made = Cluster()
    try:
        made.start()
        yield made
    finally:
        made.remove()


@pytest.fixture
def log_url(cluster: Cluster) -> str:
    """A database of this test's own on the cluster."""
    name = f"log_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(
        host="127.0.0.1", port=cluster.port, user="postgres", dbname="postgres"
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return cluster.url(name)


@pytest.fixture(scope="module")
def var(tmp_path_factory: pytest.TempPathFactory, default_model: Pipeline) -> Path:
    var = tmp_path_factory.mktemp("log-pg") / "var"
    register_into(var, default_model)
    return var


def traffic_text(client_number: int, sent: int) -> dict[str, Any]:
    """Every 10th text carries a NUL, which PostgreSQL's text type cannot hold."""
    text = f"client {client_number} says the crew was lovely #{sent}"
    return {"text": text + ("\x00" if sent % 10 == 0 else ""), "user_id": "u"}


def answered_ids(traffic: Traffic) -> list[str]:
    return [answer.body["prediction_id"] for answer in list(traffic.answers) if answer.body]


def metric(url: str, name: str) -> float:
    """A metric's value in /metrics, summed over its labels (the server sums the workers)."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith((name + " ", name + "{")):
            total += float(line.split()[-1])
    return total


def closing_lines(srv: ServerProcess) -> list[dict[str, Any]]:
    return [
        r for r in srv.log_records() if str(r.get("msg", "")).startswith("prediction log closed")
    ]


@dataclass
class Outage:
    down: float  # when the cluster was crashed (monotonic)
    up: float  # when it answered again
    ready: dict[str, Any]  # /ready's body while it was down
    queued: float  # prediction_log_queue_depth while it was down


def outage(cluster: Cluster, srv: ServerProcess, traffic: Traffic) -> Outage:
    """Crash the cluster under the traffic for OUTAGE_SECONDS, then start it again."""
    eventually(lambda: len(answered_ids(traffic)) >= 50, "traffic flows", timeout=60)
    cluster.crash()
    down = time.monotonic()

    def ready_says_down() -> dict[str, Any] | None:
        response = httpx.get(f"{srv.url}/ready", timeout=30)
        body: dict[str, Any] = response.json()
        down = response.status_code == 200 and body["prediction_log"].startswith("unavailable")
        return body if down else None

    ready = eventually(ready_says_down, "/ready says the log is down")
    queued = metric(srv.url, "prediction_log_queue_depth")
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down)))
    cluster.start()
    up = time.monotonic()
    eventually(lambda: traffic.answered_between(up, time.monotonic()) >= 50, "traffic after")
    return Outage(down, up, ready, queued)


def test_every_prediction_answered_during_a_database_crash_is_logged(
    cluster: Cluster, log_url: str, var: Path, tmp_path: Path
) -> None:
    srv = start_server(
        var,
        tmp_path / "server.log",
        workers=2,
        database_url=log_url,
        database_timeout_seconds=2,
        prediction_log_texts=True,
        prediction_log_queue_size=1_000_000,
    )
    try:
        srv.wait_ready()
        # ready means one worker has its model; under load the other may still be loading
        wait_for("both workers serving", lambda: len(serving(srv, 1)) == 2)
        with Traffic(srv.url, CLIENTS, body=traffic_text) as traffic:
            crash = outage(cluster, srv, traffic)
        eventually(lambda: metric(srv.url, "prediction_log_queue_depth") == 0, "the queues emptied")
        dropped = metric(srv.url, "prediction_log_dropped_total")
    finally:
        srv.stop()
    assert traffic.errors == []
    assert traffic.statuses() == {200}, "served while the log was down"
    assert traffic.answered_between(crash.down, crash.up) > 0
    assert "wait in this worker's queue" in crash.ready["prediction_log"]
    assert crash.queued > 0
    assert dropped == 0
    rows = logged_rows(log_url)
    missing_ids = set(answered_ids(traffic)) - set(rows)
    answered = answered_ids(traffic)
    assert missing_ids == set(), f"{len(missing_ids)} of {len(answered)} answered, not logged"
    with_nul = [r for r in rows.values() if r["text"].endswith("\ufffd")]
    assert len(with_nul) >= len(rows) // 10 - CLIENTS
    for row in with_nul:
        assert row["text_sha256"] == hashlib.sha256(f"{row['text'][:-1]}\x00".encode()).hexdigest()
    closed = closing_lines(srv)
    assert len(closed) == 2 and all(line["dropped"] == 0 for line in closed)


def test_with_a_tiny_queue_the_dropped_counter_equals_the_rows_missing(
    cluster: Cluster, log_url: str, var: Path, tmp_path: Path
) -> None:
    srv = start_server(
        var,
        tmp_path / "server.log",
        workers=1,
        database_url=log_url,
        database_timeout_seconds=2,
        prediction_log_queue_size=5,
    )
    try:
        srv.wait_ready()
        with Traffic(srv.url, CLIENTS, body=traffic_text) as traffic:
            outage(cluster, srv, traffic)
        eventually(lambda: metric(srv.url, "prediction_log_queue_depth") == 0, "the queue emptied")
        dropped = metric(srv.url, "prediction_log_dropped_total")
    finally:
        srv.stop()
    assert traffic.statuses() == {200}
    missing_ids = set(answered_ids(traffic)) - set(logged_rows(log_url))
    assert dropped > 0, "the queue was meant to overflow"
    assert len(missing_ids) == dropped
    assert [line["dropped"] for line in closing_lines(srv)] == [dropped]


def test_ready_reports_a_frozen_database_while_the_write_hangs_and_ok_after_it_thaws(
    cluster: Cluster, log_url: str, var: Path, tmp_path: Path
) -> None:
    """SIGSTOP on every process of the cluster leaves the writer's call hanging: no error
    comes, and the server's statement timeout cannot fire. `/ready` stays 200 (the log never
    makes the server unready) but reports the log unavailable once the call has been in
    flight longer than the database timeout; after SIGCONT it is ok again, and the
    predictions answered meanwhile are in the log."""
    srv = start_server(
        var,
        tmp_path / "server.log",
        workers=1,
        database_url=log_url,
        database_timeout_seconds=DATABASE_TIMEOUT,
    )
    client = httpx.Client(base_url=srv.url, headers=bearer("predict"), timeout=30)

    def predict(n: int) -> str:
        response = client.post("/predict", json={"text": f"the crew was lovely #{n}"})
        assert response.status_code == 200, response.text
        return str(response.json()["prediction_id"])

    def ready() -> httpx.Response:
        return client.get("/ready")

    try:
        srv.wait_ready()
        wait_for("the log migrated", lambda: ready().json()["prediction_log"] == "ok")
        made = [predict(0)]
        # written: the writer's connection is pooled, and its next call will be on it
        wait_for("the first prediction logged", lambda: made[0] in logged_rows(log_url))
        with cluster.frozen():
            made += [predict(n) for n in range(1, 6)]
            frozen = wait_for(
                "/ready reports the stalled write",
                lambda: (r := ready()).json()["prediction_log"] != "ok" and r,
                STATE_BOUND,
            )
        thawed = wait_for(
            "/ready says ok again",
            lambda: (r := ready()).json()["prediction_log"] == "ok" and r,
            STATE_BOUND,
        )
        wait_for("the predictions logged", lambda: set(made) <= set(logged_rows(log_url)))
    finally:
        client.close()
        srv.stop()
    assert (frozen.status_code, frozen.json()["status"]) == (200, "ready")
    log_state = frozen.json()["prediction_log"]
    assert log_state.startswith("unavailable since "), log_state
    assert "a database call has not returned for " in log_state
    assert f"(the timeout is {DATABASE_TIMEOUT:g} s)" in log_state
    assert thawed.status_code == 200
    records = srv.log_records()
    stalls = [r for r in records if str(r.get("msg", "")).startswith("prediction log stall")]
    assert [r["msg"] for r in stalls] == [
        "prediction log stalled: a database call has not returned within the timeout",
        "prediction log stall over: the database call returned",
    ]
    assert stalls[0]["in_flight_seconds"] >= DATABASE_TIMEOUT
    assert [line["dropped"] for line in closing_lines(srv)] == [0]


def test_workers_migrating_at_once_build_the_tables_once(log_url: str) -> None:
    databases = [LogDatabase(log_url, timeout_seconds=10) for _ in range(4)]
    with ThreadPoolExecutor(len(databases)) as pool:
        list(pool.map(LogDatabase.migrate, databases))
    engine = databases[0].engine
    assert {"predictions", "feedback", VERSION_TABLE} <= set(inspect(engine).get_table_names())
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        assert context.get_current_revision() == "0002"
        assert compare_metadata(context, metadata) == []
    databases[0].downgrade("base")
    assert "predictions" not in inspect(engine).get_table_names()
    for db in databases:
        db.dispose()


def test_feedback_on_postgresql_is_joined_once_even_when_sent_twice_at_once(
    log_url: str, tmp_path: Path, default_model: Pipeline
) -> None:
    """The race is the point, not the log's speed: the predictions are in the database before
    the feedback races, and the log's timeout (which turns a slow answer into a 503) is the
    test's bound, far above what a loaded machine needs for one row's update."""
    timeout = 60.0
    settings = api_settings(
        tmp_path / "var", database_url=log_url, database_timeout_seconds=timeout
    )
    app = create_app(settings, FakeSource({1: default_model}, {"champion": 1}))
    with ready_client(app, headers=bearer("predict", "feedback")) as client:
        made = [client.post("/predict", json={"text": f"great crew {i}"}).json() for i in range(8)]
        ids = {m["prediction_id"] for m in made}

        def logged() -> bool:
            try:
                return ids <= set(logged_rows(log_url))
            except ProgrammingError:  # the log's migration, in the background, is not done
                return False

        eventually(logged, "the predictions logged", timeout)

        def send(args: tuple[str, str]) -> int:
            body = {"prediction_id": args[0], "label": args[1]}
            return client.post("/feedback", json=body).status_code

        pairs = [(m["prediction_id"], label) for m in made for label in ("positive", "negative")]
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(send, pairs))
        again = [send((m["prediction_id"], "positive")) for m in made]
    by_prediction = [statuses[i : i + 2] for i in range(0, len(statuses), 2)]
    assert [sorted(pair) for pair in by_prediction] == [[200, 409]] * len(made), (
        "exactly one label won each race"
    )
    assert again == [pair[0] for pair in by_prediction], "the winner is the stored label"


def test_a_batch_goes_to_postgresql_as_one_statement(log_url: str) -> None:
    """psycopg2's executemany makes a round trip per row (see log_database.py)."""
    db = LogDatabase(log_url, timeout_seconds=10)
    db.migrate()
    try:
        assert inserts_sent(db, 300) == [300]
    finally:
        db.dispose()
