"""Structured logs: one JSON object per line, carrying the request id when there is one.

The access log writes a line per request, so a line's cost is the server's: on the event
loop's thread, `LoopFlushedHandler` writes each line at once and flushes the stream once per
turn of the loop (one write system call for every line of that turn, instead of one per
line); records from other threads, and from a process without a running loop, are flushed at
once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# LogRecord's own attributes, and uvicorn's terminal-colour copy of its message.
_NOT_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """Fields passed with `extra=` become top-level keys, so logs can be queried by them.

    It formats the access log's line for every request, so it keeps the work per line small:
    the timestamp's date and time are formatted once per second, and one encoder is reused.
    """

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")  # one tuple: read and replaced atomically

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        rid = request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        fields = record.__dict__
        for name in fields:
            if name not in _NOT_FIELDS:
                entry[name] = fields[name]
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)

    def _timestamp(self, created: float) -> str:
        """`datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")`, with the
        seconds' text reused (rounded to microseconds first, as `fromtimestamp` does)."""
        second = int(created)
        micros = round((created - second) * 1e6)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        cached, text = self._second
        if second != cached:
            text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (second, text)
        return f"{text}.{micros // 1000:03d}+00:00"


_ENCODER = json.JSONEncoder(default=str)


class LoopFlushedHandler(logging.StreamHandler[TextIO]):
    """A stream handler that, on a running event loop's thread, flushes once per loop turn.

    A line stays in the stream's buffer until the loop's current turn ends, microseconds; a
    process killed meanwhile loses those lines, as it would lose a line being formatted.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._flush_pending = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if not self._flush_pending:  # emit holds the handler's lock
            self._flush_pending = True
            loop.call_soon(self._flush_turn)

    def _flush_turn(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._flush_pending = False
        self.flush()


# Libraries whose records join ours, as JSON lines, from warnings up (MLflow gives
# `sqlalchemy.engine` a handler of its own, so it is named too).
LIBRARY_LOGGERS = ("mlflow", "alembic", "sqlalchemy", "sqlalchemy.engine")
# MLflow's SQL store logs the full traceback (~125 lines) of every call that fails on a
# database error, and a warning for each retry while it builds its engine, then raises. The
# registry turns those errors into RegistryUnavailable and the model pool logs them, once
# per change of state; with the registry down, this logger alone flooded stderr.
QUIET_LOGGERS = ("mlflow.store.db.utils",)


def configure_logging(level: str = "INFO") -> None:
    """Send our loggers, uvicorn's and the libraries' to stdout as JSON lines (idempotent).

    `import mlflow` sets up MLflow's loggers with a plain-text stderr handler of its own;
    call this after it to replace that handler too.
    """
    handler = LoopFlushedHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    # No record of ours reads the caller's file and line, the thread or the multiprocessing
    # process name; looking them up was a tenth of each access-log line (logging's
    # documented optimisations).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    levels = {
        **dict.fromkeys(("sentiment_mlops", "uvicorn", "uvicorn.error"), level),
        **dict.fromkeys(LIBRARY_LOGGERS, "WARNING"),
    }
    for name, logger_level in levels.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logger_level)
        logger.propagate = False
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.getLogger("uvicorn.access").disabled = True
