"""The prediction log as the server sees it: a non-blocking sink for predictions, a writer
thread that puts them in the database in batches, and feedback joined to them later.

- `record` (on the request path) turns each prediction into a row (the text's SHA-256, the
  user's keyed hash `subjects.subject_hash`, no raw user id, the text only when
  `SENTIMENT_PREDICTION_LOG_TEXTS` is on) and appends it to a bounded
  queue; when the queue is full the new rows are dropped and counted
  (`prediction_log_dropped_total{reason="queue_full"}`). It never waits for the database.
- One writer thread per worker migrates the schema to head at startup, then writes what is
  queued in batches (one transaction each). A failed write leaves its rows queued and is
  retried with exponential backoff; the queue's depth is `prediction_log_queue_depth`.
  Between batches it deletes rows older than `SENTIMENT_PREDICTION_RETENTION_DAYS`.
- `close` (at shutdown) writes what is queued for at most `SENTIMENT_PREDICTION_LOG_FLUSH_SECONDS`;
  what is left is dropped, counted (`reason="shutdown"`) and logged.
- `feedback` joins a true label to a logged prediction in a small thread pool of its own,
  bounded by `SENTIMENT_DATABASE_TIMEOUT_SECONDS`. A prediction still queued in this worker
  is written first (waited for within that time); one older than the retention is refused
  as expired, from the time in its UUIDv7 id, whether or not its row is gone yet.
- `health` is what `/ready` says about the log: the database's state as of the writer's last
  call; unavailable too while its call in flight has taken longer than
  `SENTIMENT_DATABASE_TIMEOUT_SECONDS` (a frozen server: the driver's timeouts are the
  server's to enforce, and nothing ends the call), and while a full queue drops new rows.
  A stall is logged once, by the first `health` or `record` to find it, and once more when
  the call returns.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, Protocol

from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from sentiment_mlops.checksums import text_sha256
from sentiment_mlops.config import Settings
from sentiment_mlops.serving.log_database import (
    Feedback,
    FeedbackRefused,
    LogDatabase,
    PredictionExpired,
    UnknownPrediction,
)
from sentiment_mlops.serving.metrics import Metrics
from sentiment_mlops.serving.predictions import prediction_time_ms
from sentiment_mlops.serving.predictor import PredictionEvent
from sentiment_mlops.subjects import subject_hash, subject_key

log = logging.getLogger("sentiment_mlops.serving.prediction_log")

Row = dict[str, Any]
BATCH_ROWS = 500  # rows per INSERT transaction
# How long the writer lets rows gather before a transaction that would hold fewer than
# BATCH_ROWS: a transaction per request or two cost /predict a third of its throughput.
LINGER_SECONDS = 0.05
EXPIRY_CHUNK_ROWS = 2000  # rows per DELETE transaction, so writes interleave with expiry
EXPIRY_EVERY_SECONDS = 3600.0
FEEDBACK_THREADS = 4
# Feedback for an unknown id this recent may be for a row still queued in another worker.
RECENT_SECONDS = 60


class LogStore(Protocol):
    """What the writer needs from the database (`LogDatabase`; tests hand it another)."""

    def migrate(self) -> None: ...

    def insert(self, rows: Sequence[Row]) -> None: ...

    def delete_before(self, cutoff: datetime, limit: int) -> int: ...

    def add_feedback(self, prediction_id: str, label: str, received_at: datetime) -> Feedback: ...

    def dispose(self) -> None: ...


class LogUnavailable(ConnectionError):
    """The log's database cannot be used right now; the message says why."""


@dataclass(frozen=True)
class Backoff:
    """Pauses between failed attempts: `first`, then `factor` times longer, at most `limit`."""

    first: float = 0.1
    factor: float = 2.0
    limit: float = 5.0

    def delay(self, failures: int) -> float:
        exponent = min(max(0, failures - 1), 64)  # 2.0 ** 1100 would overflow
        return min(self.limit, self.first * self.factor**exponent)


def prediction_row(event: PredictionEvent, keep_text: bool, subject_key: bytes) -> Row:
    """The `predictions` row of one event: the text's SHA-256 and length, the subject's
    `subject_hash` under `subject_key`, the account as given, and the text itself only if
    `keep_text`."""
    return {
        "id": event.prediction_id,
        "created_at": event.created_at,
        "experiment": event.experiment,
        "variant": event.variant,
        "model_version": event.model_version,
        "label": event.label,
        "probabilities": event.probabilities,
        "text_sha256": text_sha256(event.text),
        "text_length": len(event.text),
        "subject_hash": None if event.subject is None else subject_hash(event.subject, subject_key),
        "account": event.account,
        # PostgreSQL's text type cannot hold NUL; the hash above is of the text as sent
        "text": event.text.replace("\x00", "\ufffd") if keep_text else None,
        "latency_ms": event.latency_ms,
        "shadow_of": event.shadow_of,
    }


def _reason(exc: BaseException) -> str:
    """A database error in one line: the driver's message, without SQLAlchemy's statement."""
    original = getattr(exc, "orig", None) or exc
    message = " ".join(str(original).split()) or type(original).__name__
    return message[:300]


class PredictionLog:
    """A `PredictionSink` writing to `store` from a thread of its own; see the module."""

    def __init__(
        self,
        store: LogStore,
        metrics: Metrics,
        *,
        queue_size: int,
        keep_texts: bool,
        subject_key: bytes,
        retention_days: int,
        timeout_seconds: float,
        flush_seconds: float,
        batch_rows: int = BATCH_ROWS,
        linger_seconds: float = LINGER_SECONDS,
        backoff: Backoff | None = None,
        expiry_every_seconds: float = EXPIRY_EVERY_SECONDS,
        pause: Callable[[float], object] | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._queue_size = queue_size
        self._keep_texts = keep_texts
        self._subject_key = subject_key
        self._retention = timedelta(days=retention_days)
        self._retention_days = retention_days
        self._timeout = timeout_seconds
        self._flush_seconds = flush_seconds
        self._batch_rows = batch_rows
        self._linger = linger_seconds
        self._backoff = backoff or Backoff()
        self._expiry_every = expiry_every_seconds
        # Set by close: cuts short the writer's pause after a failure, so its flush starts now.
        self._interrupt = threading.Event()
        # How the writer waits between failed attempts (tests record the pauses instead).
        self._pause = pause or self._interrupt.wait
        lock = threading.Lock()
        self._rows_arrived = threading.Condition(lock)  # the writer waits on this
        self._rows_left = threading.Condition(lock)  # feedback and flush wait on this
        self._queue: deque[tuple[int, Row]] = deque()  # (sequence number, row), oldest first
        self._next_seq = 0
        self._deadline: float | None = None  # set by close
        self._dropping = 0  # rows dropped since the queue was last found full
        self._dropping_since: datetime | None = None
        # When the writer's database call in flight started (monotonic), and which call's
        # stall has been logged: both set and read under the queue's lock.
        self._call_started: float | None = None
        self._stall_logged: float | None = None
        self._written = 0
        self._dropped = 0
        self._migrated = False
        self._next_expiry = 0.0
        self._problem: str | None = None  # why the last database call failed, if it did
        self._problem_since: datetime | None = None
        self._thread: threading.Thread | None = None
        self._feedback_threads = ThreadPoolExecutor(FEEDBACK_THREADS, "prediction-log-feedback")
        self._depth = metrics.log_queue_depth
        self._depth.set(0)

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics) -> PredictionLog:
        key = subject_key(settings)  # before the engine: a bad key leaves nothing open
        database = LogDatabase(settings.prediction_log_url(), settings.database_timeout_seconds)
        return cls(
            database,
            metrics,
            queue_size=settings.prediction_log_queue_size,
            keep_texts=settings.prediction_log_texts,
            subject_key=key,
            retention_days=settings.prediction_retention_days,
            timeout_seconds=settings.database_timeout_seconds,
            flush_seconds=settings.prediction_log_flush_seconds,
        )

    # -- the request path ---------------------------------------------------------------------

    def record(self, events: Sequence[PredictionEvent]) -> None:
        """Queue `events` for the writer; what does not fit is dropped and counted."""
        rows = [prediction_row(event, self._keep_texts, self._subject_key) for event in events]
        with self._rows_arrived:
            if self._deadline is not None:
                dropped, reason = len(rows), "shutdown"
            else:
                queued = len(self._queue)
                room = max(0, self._queue_size - queued)
                dropped, reason = max(0, len(rows) - room), "queue_full"
                for row in rows[:room]:
                    self._queue.append((self._next_seq, row))
                    self._next_seq += 1
                self._depth.set(len(self._queue))
                # the writer waits for a first row, then lingers until a batch is full
                if queued == 0 or queued < self._batch_rows <= len(self._queue):
                    self._rows_arrived.notify()
            self._dropped += dropped
            dropped_before, self._dropping = (
                self._dropping,
                self._dropping + dropped if dropped else 0,
            )
            if not dropped:
                self._dropping_since = None
            elif not dropped_before:
                self._dropping_since = datetime.now(UTC)
            stall = self._stall()
        if stall is not None and stall[1]:
            self._log_stall(stall[0])
        if dropped:
            self._metrics.log_dropped.labels(reason).inc(dropped)
            if not dropped_before:  # logged when dropping starts and when it stops, not per row
                log.warning(
                    "prediction log queue full: dropping new predictions",
                    extra={"queue_size": self._queue_size, "reason": reason},
                )
        elif dropped_before:
            log.warning(
                "prediction log queue has room again",
                extra={"dropped": dropped_before, "queue_size": self._queue_size},
            )

    # -- the writer thread --------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer: migrate, then write what is queued and expire old rows."""
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failures = 0
        while True:
            with self._rows_arrived:
                while not (self._queue or self._deadline is not None or self._chores_due()):
                    self._rows_arrived.wait(self._seconds_to_chores())
                lingering = self._deadline is None and self._migrated
                if lingering and 0 < len(self._queue) < self._batch_rows:
                    self._rows_arrived.wait(self._linger)
                if self._deadline is not None and (
                    not self._queue or time.monotonic() >= self._deadline
                ):
                    break
                batch = list(islice(self._queue, self._batch_rows))
            try:
                if batch and self._migrated:
                    self._write(batch)
                elif not self._migrated:
                    with self._call():
                        self._store.migrate()
                    self._migrated = True
                else:
                    self._expire()
            except Exception as exc:  # the database being down must never end the writer
                failures += 1
                self._failed(exc)
                delay = self._backoff.delay(failures)
                if self._deadline is not None:
                    delay = min(delay, max(0.0, self._deadline - time.monotonic()))
                self._pause(delay)
                self._interrupt.clear()
                continue
            failures = 0
            self._answered()
        self._drop_queued("shutdown")

    def _chores_due(self) -> bool:
        return not self._migrated or time.monotonic() >= self._next_expiry

    def _seconds_to_chores(self) -> float:
        return 0.0 if not self._migrated else max(0.0, self._next_expiry - time.monotonic())

    def _write(self, batch: list[tuple[int, Row]]) -> None:
        """Write `batch` in one transaction; if the database refuses a row itself (a value it
        cannot hold), write them one by one and drop only the refused ones."""
        try:
            with self._call():
                self._store.insert([row for _, row in batch])
        except (DataError, IntegrityError):
            for seq, row in batch:
                try:
                    with self._call():
                        self._store.insert([row])
                except (DataError, IntegrityError) as exc:
                    self._reject(seq, row, exc)
                else:
                    self._answered()
                    self._left(seq, written=1)
            return
        self._answered()  # before anyone waiting for these rows hears of them
        self._left(batch[-1][0], written=len(batch))

    def _reject(self, seq: int, row: Row, exc: BaseException) -> None:
        log.error(
            "prediction log refused a row; dropped",
            extra={"prediction_id": row["id"], "error": _reason(exc)},
        )
        self._metrics.log_dropped.labels("rejected").inc()
        with self._rows_left:
            self._dropped += 1
        self._left(seq, written=0)

    def _left(self, last_seq: int, written: int) -> None:
        """Rows up to `last_seq` are done with (written, or dropped): off the queue."""
        with self._rows_left:
            while self._queue and self._queue[0][0] <= last_seq:
                self._queue.popleft()
            self._written += written
            self._depth.set(len(self._queue))
            self._rows_left.notify_all()

    def _expire(self) -> None:
        """Delete one chunk of rows older than the retention; schedule the next pass once
        none are left."""
        cutoff = datetime.now(UTC) - self._retention
        with self._call():
            deleted = self._store.delete_before(cutoff, EXPIRY_CHUNK_ROWS)
        if deleted:
            log.info(
                "expired predictions deleted",
                extra={"deleted": deleted, "before": cutoff.isoformat(timespec="seconds")},
            )
        if deleted < EXPIRY_CHUNK_ROWS:
            self._next_expiry = time.monotonic() + self._expiry_every

    @contextmanager
    def _call(self) -> Iterator[None]:
        """Around each of the writer's database calls: `health` watches how long it takes."""
        with self._rows_left:
            self._call_started = started = time.monotonic()
        try:
            yield
        finally:
            with self._rows_left:
                stalled = self._stall_logged == started
                self._call_started = self._stall_logged = None
            if stalled:
                log.info(
                    "prediction log stall over: the database call returned",
                    extra={
                        "in_flight_seconds": round(time.monotonic() - started, 1),
                        "queued": len(self._queue),
                    },
                )

    def _stall(self) -> tuple[float, bool] | None:
        """How long the writer's database call has been in flight, if longer than the
        timeout, and whether its stall is new (not logged yet; the caller logs it). Called
        under the queue's lock."""
        started = self._call_started
        if started is None:
            return None
        seconds = time.monotonic() - started
        if seconds <= self._timeout:
            return None
        new, self._stall_logged = self._stall_logged != started, started
        return seconds, new

    def _log_stall(self, seconds: float) -> None:
        log.warning(
            "prediction log stalled: a database call has not returned within the timeout",
            extra={
                "in_flight_seconds": round(seconds, 1),
                "timeout_seconds": self._timeout,
                "queued": len(self._queue),
            },
        )

    def _failed(self, exc: BaseException) -> None:
        reason = _reason(exc)
        if self._problem is None:
            self._problem_since = datetime.now(UTC)
            log.warning(
                "prediction log unavailable; predictions wait in the queue",
                extra={"error": reason, "queued": len(self._queue)},
            )
        self._problem = reason

    def _answered(self) -> None:
        if self._problem is not None:
            log.info(
                "prediction log writes again",
                extra={"queued": len(self._queue), "down_since": str(self._problem_since)},
            )
        self._problem = self._problem_since = None

    def _drop_queued(self, reason: str) -> int:
        """Drop (count) whatever is still queued; how many rows that was."""
        with self._rows_left:
            dropped = len(self._queue)
            self._queue.clear()
            self._dropped += dropped
            self._depth.set(0)
            self._rows_left.notify_all()
        if dropped:
            self._metrics.log_dropped.labels(reason).inc(dropped)
        return dropped

    # -- shutdown -----------------------------------------------------------------------------

    def close(self) -> None:
        """Write what is queued, for at most the flush timeout; drop and count the rest."""
        with self._rows_arrived:
            if self._deadline is None:
                self._deadline = time.monotonic() + self._flush_seconds
            self._rows_arrived.notify_all()
        self._interrupt.set()
        if self._thread is not None:
            # a database call in flight is bounded by the driver's timeout, not ours
            self._thread.join(self._flush_seconds + self._timeout + 1)
        left = self._drop_queued("shutdown")
        self._feedback_threads.shutdown(wait=False, cancel_futures=True)
        self._store.dispose()
        summary = {"written": self._written, "dropped": self._dropped}
        if self._dropped:
            log.error(
                "prediction log closed with predictions never written",
                extra={**summary, "left_in_queue": left, "database": self._problem},
            )
        else:
            log.info("prediction log closed", extra=summary)

    def flush(self, timeout: float) -> bool:
        """Wait until every row queued so far has been written (or dropped); False if some
        were still queued after `timeout` seconds."""
        with self._rows_left:
            last = self._next_seq - 1
        return self._wait_gone(last, timeout)

    def _wait_gone(self, seq: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._rows_left:
            while self._queue and self._queue[0][0] <= seq:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._rows_left.wait(remaining)
        return True

    def _queued_seq(self, prediction_id: str) -> int | None:
        with self._rows_left:
            for seq, row in self._queue:
                if row["id"] == prediction_id:
                    return seq
        return None

    # -- what the API asks ----------------------------------------------------------------------

    def health(self) -> str:
        """`ok`, or why the log cannot be written now and how many rows wait here: the last
        call failed, the call in flight has taken longer than the timeout, or the queue is
        full and new rows are dropped."""
        with self._rows_left:
            problem, since = self._problem, self._problem_since
            stall = self._stall()
            queued = len(self._queue)
            full = self._dropping_since is not None and queued >= self._queue_size
            dropping_since = self._dropping_since
        if stall is not None:
            seconds, new = stall
            if new:
                self._log_stall(seconds)
            since = datetime.now(UTC) - timedelta(seconds=seconds)
            problem = (
                f"a database call has not returned for {seconds:.1f} s (the timeout is "
                f"{self._timeout:g} s)"
            )
        elif problem is None and full:
            since = dropping_since
            problem = "the queue is full: predictions come faster than they are written"
        if problem is None:
            return "ok" if self._migrated else "connecting to the database"
        started = since.isoformat(timespec="seconds") if since else "?"
        dropping = "; new predictions are dropped" if full else ""
        return (
            f"unavailable since {started}: {problem}; {queued} predictions wait in "
            f"this worker's queue (of {self._queue_size}){dropping}"
        )

    async def feedback(self, prediction_id: str, label: str) -> Feedback:
        """Join `label` to the prediction; FeedbackRefused says why not, LogUnavailable when
        the database cannot answer within the timeout."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self._timeout
        asked = loop.run_in_executor(
            self._feedback_threads, self._feedback, prediction_id, label, deadline
        )
        # Waiting for a queued row ends at the deadline; a database call started just before
        # it is ended by the driver's timeout (the same length) at the latest.
        try:
            return await asyncio.wait_for(asked, 2 * self._timeout)
        except TimeoutError:
            raise LogUnavailable(
                f"the prediction log did not answer within {2 * self._timeout:g} s"
            ) from None

    def _feedback(self, prediction_id: str, label: str, deadline: float) -> Feedback:
        made_ms = prediction_time_ms(prediction_id)
        if made_ms is None:
            raise UnknownPrediction(f"'{prediction_id}' is not a prediction id this API issues")
        now = datetime.now(UTC)
        made = datetime.fromtimestamp(made_ms / 1000, UTC)
        if made < now - self._retention:
            raise PredictionExpired(
                f"prediction '{prediction_id}' was made on {made:%Y-%m-%d}, longer ago than "
                f"the log keeps predictions ({self._retention_days} days): it is no longer "
                "in the log"
            )
        try:
            found = self._add_feedback(prediction_id, label, now)
        except UnknownPrediction as exc:
            seq = self._queued_seq(prediction_id)
            if seq is None:
                age = (now - made).total_seconds()
                if 0 <= age < RECENT_SECONDS:
                    raise UnknownPrediction(
                        f"{exc} (yet: it was made {age:.0f} s ago; if another worker served "
                        "it, it may still wait in that worker's queue: retry shortly)"
                    ) from None
                raise
            if not self._wait_gone(seq, deadline - time.monotonic()):
                raise LogUnavailable(
                    f"prediction '{prediction_id}' still waits to be written to the log "
                    f"({self.health()}); retry later"
                ) from None
            found = self._add_feedback(prediction_id, label, now)
        if found.new:
            correct = "true" if found.correct else "false"
            self._metrics.feedback.labels(str(found.model_version), found.variant, correct).inc()
        return found

    def _add_feedback(self, prediction_id: str, label: str, now: datetime) -> Feedback:
        try:
            return self._store.add_feedback(prediction_id, label, now)
        except FeedbackRefused:
            raise
        except SQLAlchemyError as exc:
            raise LogUnavailable(f"the prediction log is unavailable: {_reason(exc)}") from exc
