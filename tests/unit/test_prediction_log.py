"""The prediction log's writer against a store that fails, stalls or refuses on demand: rows
are batched off the caller's thread, retried with growing pauses, dropped (and counted)
exactly when the queue is full, flushed on close; feedback waits for a row still queued."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.exc import DataError, OperationalError

from sentiment_mlops.serving.log_database import Feedback, UnknownPrediction
from sentiment_mlops.serving.metrics import Metrics
from sentiment_mlops.serving.prediction_log import (
    Backoff,
    LogUnavailable,
    PredictionLog,
    prediction_row,
)
from sentiment_mlops.serving.predictions import new_prediction_id

from ..apps import captured_logs, eventually
from ..prediction_events import BOUND, SUBJECT_KEY, event, keyed_hash


def refused() -> OperationalError:
    return OperationalError("INSERT INTO predictions", {}, Exception("connection refused"))


class FakeStore:
    """A store held in memory: `gate` (when set) holds every insert until it is opened;
    `failures` inserts fail as if the server were down; ids in `bad_ids` are refused as
    data errors."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.inserts: list[list[str]] = []
        self.failures = 0
        self.bad_ids: set[str] = set()
        self.gate: threading.Event | None = None
        self.inserting = threading.Event()  # set once an insert has started
        self.migrations = 0
        self.disposed = False
        self.feedback_asked = threading.Event()

    def migrate(self) -> None:
        self.migrations += 1

    def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        self.inserting.set()
        if self.gate is not None and not self.gate.wait(BOUND):
            raise AssertionError("the test never opened the gate")
        if self.failures:
            self.failures -= 1
            raise refused()
        if any(row["id"] in self.bad_ids for row in rows):
            raise DataError("INSERT INTO predictions", {}, Exception("value too long"))
        self.inserts.append([row["id"] for row in rows])
        self.rows.update({row["id"]: dict(row) for row in rows})

    def delete_before(self, cutoff: datetime, limit: int) -> int:
        return 0

    def add_feedback(self, prediction_id: str, label: str, received_at: datetime) -> Feedback:
        self.feedback_asked.set()
        row = self.rows.get(prediction_id)
        if row is None:
            raise UnknownPrediction(f"no prediction '{prediction_id}' in the log")
        return Feedback(prediction_id, label, received_at, row["label"], 3, "champion", True)

    def dispose(self) -> None:
        self.disposed = True


class Pauses:
    """Records the writer's pauses instead of sleeping through them."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def make_log(store: FakeStore, metrics: Metrics, **options: Any) -> PredictionLog:
    values: dict[str, Any] = {
        "queue_size": 1000,
        "keep_texts": False,
        "subject_key": SUBJECT_KEY,
        "retention_days": 90,
        "timeout_seconds": BOUND,
        "flush_seconds": BOUND,
        **options,
    }
    return PredictionLog(store, metrics, **values)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def closing() -> Iterator[list[PredictionLog]]:
    """Logs to close at the end of a test, whatever happened in it."""
    logs: list[PredictionLog] = []
    yield logs
    for log in logs:
        log.close()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_rows_queued_during_a_write_go_together_in_the_next_batches(
    store: FakeStore, metrics: Metrics, closing: list[PredictionLog]
) -> None:
    store.gate = threading.Event()
    log = make_log(store, metrics, batch_rows=4)
    closing.append(log)
    log.start()
    first = event()
    log.record([first])
    assert store.inserting.wait(BOUND), "the writer picked up the first row"
    rest = [event() for _ in range(9)]
    for e in rest:
        log.record([e])
    store.gate.set()
    assert log.flush(BOUND)
    ids = [e.prediction_id for e in rest]
    assert store.inserts == [[first.prediction_id], ids[:4], ids[4:8], ids[8:]]
    assert sample(metrics, "prediction_log_queue_depth") == 0
    assert store.migrations == 1


def test_a_failed_write_keeps_its_rows_and_is_retried_with_growing_pauses(
    store: FakeStore, metrics: Metrics, closing: list[PredictionLog]
) -> None:
    store.failures = 5
    pauses = Pauses()
    health: list[str] = []

    def pause(seconds: float) -> None:
        pauses(seconds)
        health.append(log.health())

    log = make_log(store, metrics, backoff=Backoff(first=0.01, factor=2, limit=0.04), pause=pause)
    closing.append(log)
    events = [event() for _ in range(3)]
    with captured_logs() as lines:
        log.record(events)
        log.start()
        assert log.flush(BOUND)
    assert pauses.seconds == [0.01, 0.02, 0.04, 0.04, 0.04]
    assert store.inserts == [[e.prediction_id for e in events]], "written once, all together"
    assert all("unavailable since" in h and "connection refused" in h for h in health)
    assert all("3 predictions wait in this worker's queue" in h for h in health)
    assert log.health() == "ok"
    changes = [line["msg"] for line in lines if line["logger"].endswith("prediction_log")]
    assert changes == [
        "prediction log unavailable; predictions wait in the queue",
        "prediction log writes again",
    ], "one line when it goes down, one when it is back, not one per attempt"


def test_record_never_waits_and_drops_exactly_what_does_not_fit(
    store: FakeStore, metrics: Metrics, closing: list[PredictionLog]
) -> None:
    store.gate = threading.Event()
    log = make_log(store, metrics, queue_size=10)
    closing.append(log)
    log.start()
    events = [event() for _ in range(30)]

    def produce() -> None:
        log.record(events[:1])
        assert store.inserting.wait(BOUND)  # the writer is stuck in the database from now on
        for e in events[1:25]:
            log.record([e])
        log.record(events[25:])  # a batch of 5, none of which fits

    producer = threading.Thread(target=produce)
    with captured_logs() as lines:
        producer.start()
        producer.join(BOUND)
        assert not producer.is_alive(), "record() waited for the stuck database"
        assert sample(metrics, "prediction_log_dropped_total", reason="queue_full") == 20
        assert sample(metrics, "prediction_log_queue_depth") == 10
        store.gate.set()
        assert log.flush(BOUND)
        late = event()
        log.record([late])
        assert log.flush(BOUND)
    assert sorted(store.rows) == sorted(e.prediction_id for e in [*events[:10], late])
    assert sample(metrics, "prediction_log_dropped_total", reason="queue_full") == 20
    assert sample(metrics, "prediction_log_queue_depth") == 0
    drops = [line for line in lines if "queue" in line["msg"]]
    assert [line["msg"] for line in drops] == [
        "prediction log queue full: dropping new predictions",
        "prediction log queue has room again",
    ]
    assert drops[1]["dropped"] == 20


def test_a_write_in_flight_longer_than_the_timeout_makes_the_log_unavailable_until_it_returns(
    store: FakeStore, metrics: Metrics, closing: list[PredictionLog]
) -> None:
    """A frozen server never ends the writer's call (its driver timeouts are the server's to
    enforce): once the call has been in flight longer than the timeout, health says so, and
    one log line does, however often it is asked; when the call returns, it is ok again."""
    timeout = 0.2
    store.gate = threading.Event()
    log = make_log(store, metrics, timeout_seconds=timeout)
    closing.append(log)
    log.start()
    with captured_logs() as lines:
        log.record([event()])
        assert store.inserting.wait(BOUND)
        # bounded below the gate's own BOUND, so a log that never reports the stall fails here
        health = eventually(
            lambda: (h := log.health()) != "ok" and h, "health reports the stall", BOUND / 2
        )
        log.record([event()])
        health_again = log.health()
        store.gate.set()
        assert log.flush(BOUND)
        after = log.health()
    assert health.startswith("unavailable since ")
    assert "a database call has not returned for " in health
    assert f"(the timeout is {timeout:g} s)" in health
    assert "has not returned" in health_again and "2 predictions wait" in health_again
    assert after == "ok"
    changes = [line for line in lines if "stall" in line["msg"]]
    assert [line["msg"] for line in changes] == [
        "prediction log stalled: a database call has not returned within the timeout",
        "prediction log stall over: the database call returned",
    ], "one line when it stalls, one when the call returns, not one per look"
    assert changes[0]["level"] == "warning" and changes[0]["timeout_seconds"] == timeout
    assert changes[0]["in_flight_seconds"] >= timeout
    assert changes[1]["in_flight_seconds"] >= changes[0]["in_flight_seconds"]
    assert len(store.inserts) == 2, "the stalled write and the one queued behind it"


def test_a_full_queue_makes_the_log_unavailable_while_it_drops(
    store: FakeStore, metrics: Metrics, closing: list[PredictionLog]
) -> None:
    """The database answers (the write in flight is well within the timeout), but slower than
    rows come: with the queue full, health says new rows are being dropped."""
    store.gate = threading.Event()
    log = make_log(store, metrics, queue_size=3)
    closing.append(log)
    log.start()
    log.record([event()])
    assert store.inserting.wait(BOUND)
    log.record([event(), event()])
    assert log.health() == "ok", "full, but nothing dropped yet"
    log.record([event()])
    dropping = log.health()
    store.gate.set()
    assert log.flush(BOUND)
    assert dropping.startswith("unavailable since ")
    assert "the queue is full: predictions come faster than they are written" in dropping
    assert dropping.endswith(
        "3 predictions wait in this worker's queue (of 3); new predictions are dropped"
    )
    assert "has not returned" not in dropping
    assert log.health() == "ok"


def test_a_batch_that_partly_fits_queues_its_head_and_counts_only_its_tail(
    store: FakeStore, metrics: Metrics, closing: list[PredictionLog]
) -> None:
    log = make_log(store, metrics, queue_size=10)
    closing.append(log)
    first, batch = [event() for _ in range(7)], [event() for _ in range(6)]
    log.record(first)
    log.record(batch)  # 3 fit, 3 do not
    assert sample(metrics, "prediction_log_dropped_total", reason="queue_full") == 3
    assert sample(metrics, "prediction_log_queue_depth") == 10
    log.start()
    assert log.flush(BOUND)
    assert sorted(store.rows) == sorted(e.prediction_id for e in [*first, *batch[:3]])
    assert sample(metrics, "prediction_log_dropped_total", reason="queue_full") == 3


def test_close_writes_what_is_queued(store: FakeStore, metrics: Metrics) -> None:
    log = make_log(store, metrics, batch_rows=7)
    log.start()
    events = [event() for _ in range(50)]
    for e in events:
        log.record([e])
    with captured_logs() as lines:
        log.close()
    assert sorted(store.rows) == sorted(e.prediction_id for e in events)
    assert sample(metrics, "prediction_log_dropped_total", reason="shutdown") == 0
    closed = [line for line in lines if line["msg"] == "prediction log closed"]
    assert closed and (closed[0]["written"], closed[0]["dropped"]) == (50, 0)
    assert store.disposed


def test_close_writes_rows_queued_while_the_writer_waits_out_a_failure(
    store: FakeStore, metrics: Metrics
) -> None:
    """The writer is in its pause after a failed write (one far longer than close waits)
    when close comes: close cuts the pause short, and every queued row is written, in as many
    batches as it takes, before the writer stops."""
    store.failures = 1
    hour = Backoff(first=3600, limit=3600)
    log = make_log(store, metrics, batch_rows=4, timeout_seconds=1, backoff=hour)
    log.start()
    early = event()
    log.record([early])
    eventually(lambda: log.health().startswith("unavailable"), "the first write failed")
    late = [event() for _ in range(9)]
    for e in late:
        log.record([e])
    with captured_logs() as lines:
        log.close()
    ids = [e.prediction_id for e in [early, *late]]
    assert store.inserts == [ids[:4], ids[4:8], ids[8:]]
    assert sample(metrics, "prediction_log_dropped_total", reason="shutdown") == 0
    closed = [line for line in lines if line["msg"].startswith("prediction log closed")]
    assert [(line["written"], line["dropped"]) for line in closed] == [(10, 0)]


def test_close_gives_up_after_the_flush_timeout_and_counts_what_it_drops(
    store: FakeStore, metrics: Metrics
) -> None:
    store.failures = 10**9
    log = make_log(store, metrics, flush_seconds=0.2, pause=Pauses())
    log.start()
    log.record([event() for _ in range(7)])
    with captured_logs() as lines:
        log.close()
        log.record([event()])  # a late prediction is not queued for a writer that is gone
    assert store.rows == {}
    assert sample(metrics, "prediction_log_dropped_total", reason="shutdown") == 8
    assert sample(metrics, "prediction_log_queue_depth") == 0
    closed = [line for line in lines if line["msg"].startswith("prediction log closed")]
    assert closed[0]["level"] == "error"
    assert closed[0]["dropped"] == 7 and "connection refused" in closed[0]["database"]


def test_a_row_the_database_refuses_is_dropped_alone(
    store: FakeStore, metrics: Metrics, closing: list[PredictionLog]
) -> None:
    events = [event() for _ in range(5)]
    store.bad_ids = {events[2].prediction_id}
    log = make_log(store, metrics)
    closing.append(log)
    log.record(events)
    with captured_logs() as lines:
        log.start()
        assert log.flush(BOUND)
    assert sorted(store.rows) == sorted(e.prediction_id for i, e in enumerate(events) if i != 2)
    assert sample(metrics, "prediction_log_dropped_total", reason="rejected") == 1
    refusals = [line for line in lines if line["msg"] == "prediction log refused a row; dropped"]
    assert [r["prediction_id"] for r in refusals] == [events[2].prediction_id]
    assert log.health() == "ok"


def test_feedback_for_a_row_still_queued_waits_for_its_write(
    store: FakeStore, metrics: Metrics, closing: list[PredictionLog]
) -> None:
    store.gate = threading.Event()
    log = make_log(store, metrics)
    closing.append(log)
    log.start()
    made = event()
    log.record([made])
    assert store.inserting.wait(BOUND)
    answer: list[Feedback] = []
    asking = threading.Thread(
        target=lambda: answer.append(asyncio.run(log.feedback(made.prediction_id, "positive")))
    )
    asking.start()
    assert store.feedback_asked.wait(BOUND), "the log was asked and found no row yet"
    store.gate.set()
    asking.join(BOUND)
    assert answer and answer[0].predicted_label == "positive" and answer[0].correct
    assert sample(
        metrics, "model_feedback_total", model_version="3", variant="champion", correct="true"
    )


def test_feedback_for_a_row_that_stays_queued_is_unavailable_not_unknown(
    store: FakeStore, metrics: Metrics, closing: list[PredictionLog]
) -> None:
    store.gate = threading.Event()
    log = make_log(store, metrics, timeout_seconds=0.3)
    closing.append(log)
    log.start()
    made = event()
    log.record([made])
    assert store.inserting.wait(BOUND)
    with pytest.raises(LogUnavailable, match="still waits to be written to the log"):
        asyncio.run(log.feedback(made.prediction_id, "positive"))
    with pytest.raises(UnknownPrediction, match="another worker"):
        asyncio.run(log.feedback(new_prediction_id(), "positive"))
    store.gate.set()


def test_a_row_hashes_text_and_subject_and_keeps_the_text_only_when_asked() -> None:
    made = event("bad\x00 flight \ud800", subject="alice@example.com")
    row = prediction_row(made, keep_text=False, subject_key=SUBJECT_KEY)
    encoded = made.text.encode("utf-8", "surrogatepass")
    assert row["text_sha256"] == hashlib.sha256(encoded).hexdigest()
    assert row["text_length"] == len(made.text) == 13
    assert row["subject_hash"] == keyed_hash("alice@example.com")
    assert row["text"] is None
    assert "alice" not in repr(row)
    kept = prediction_row(made, keep_text=True, subject_key=SUBJECT_KEY)
    assert kept["text"] == "bad\ufffd flight \ud800", "NUL replaced: PostgreSQL refuses it"
    no_subject = prediction_row(event(subject=None), keep_text=False, subject_key=SUBJECT_KEY)
    assert no_subject["subject_hash"] is None


def test_the_subject_hash_is_keyed_not_a_plain_sha256_anyone_can_recompute() -> None:
    def logged(subject: str, key: bytes) -> str:
        hashed: str = prediction_row(event(subject=subject), False, key)["subject_hash"]
        return hashed

    other_key = b"another-key-of-at-least-32-bytes-0123456789"
    for subject in ("misc", "alice@example.com", "\u00e9l\u00e8ve"):
        hashed = logged(subject, SUBJECT_KEY)
        assert hashed != hashlib.sha256(subject.encode()).hexdigest()
        assert hashed == keyed_hash(subject, SUBJECT_KEY)
        assert len(hashed) == 64, "the column is String(64)"
        assert logged(subject, other_key) == keyed_hash(subject, other_key) != hashed
    assert logged("misc", SUBJECT_KEY) != logged("misc2", SUBJECT_KEY)
