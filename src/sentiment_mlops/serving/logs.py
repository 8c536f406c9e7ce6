"""Structured logs: one JSON object per line, carrying the request id when there is one."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# LogRecord's own attributes, and uvicorn's terminal-colour copy of its message.
_NOT_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """Fields passed with `extra=` become top-level keys, so logs can be queried by them."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        rid = request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        entry.update({k: v for k, v in vars(record).items() if k not in _NOT_FIELDS})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


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
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
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
