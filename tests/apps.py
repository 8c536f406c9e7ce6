"""Building the real app in process for tests: settings, tokens, and captured log records."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from sentiment_mlops.config import Settings
from sentiment_mlops.serving.logs import JsonFormatter
from sentiment_mlops.serving.tokens import Authenticator
from tests.prediction_events import SUBJECT_KEY

SECRET = "integration-tests-secret-0123456789abcdef"

T = TypeVar("T")


def write_routing(path: Path, **config: Any) -> Path:
    """Write a routing config (the keys of configs/routing.yaml) to `path`; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def api_settings(var: Path, **overrides: Any) -> Settings:
    """Settings for a test app: its own var dir, a fixed signing secret and subject key, no
    background poll, and every user on `champion` (its own routing file, whatever
    configs/routing.yaml says)."""
    values: dict[str, Any] = {
        "var_dir": var,
        "jwt_secret": SecretStr(SECRET),
        "subject_key": SecretStr(SUBJECT_KEY.decode()),
        "auth_disabled": False,
        "log_texts": False,
        "reload_interval_seconds": 3600,
        **overrides,
    }
    if "routing" not in values:
        values["routing"] = write_routing(
            var / "routing.yaml", experiment="default", variants={"champion": 100}
        )
    return Settings(**values)


def mint(*scopes: str, ttl: int | None = None, subject: str = "tester") -> str:
    """A token signed with the test secret, as the server would issue it."""
    auth = Authenticator.from_settings(Settings(jwt_secret=SecretStr(SECRET)))
    return auth.mint(subject, scopes, ttl)


def bearer(*scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(*scopes)}"}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@contextmanager
def captured_logs(
    name: str = "sentiment_mlops.serving", level: int = logging.INFO
) -> Iterator[list[dict[str, Any]]]:
    """The JSON log lines `name` (and its children) write while the block runs, as dicts.

    Attached below the package logger, whose handlers the app replaces when it starts; from
    `level` up (INFO, as the server logs), even where no app has configured the level.
    """
    handler = _Records()
    logger = logging.getLogger(name)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def eventually(check: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    """The first truthy value of `check()`, polled; AssertionError naming `what` if none came
    within `timeout` seconds (a generous bound: the point is "not never", not speed)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last: {value!r})")
        time.sleep(0.01)


@contextmanager
def ready_client(app: FastAPI, **client_args: Any) -> Iterator[TestClient]:
    """The app started in a TestClient, once `/ready` answers 200: the model pool loads in
    the background, so the app starts (and answers /health) before its model is loaded."""
    with TestClient(app, **client_args) as client:
        eventually(lambda: client.get("/ready").status_code == 200, "the app became ready")
        yield client
