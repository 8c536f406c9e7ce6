"""The real server for process-level tests: trained into a registry, started as users start it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.pipeline import Pipeline

from sentiment_mlops.config import Settings, TrainConfig
from sentiment_mlops.registry import Registry
from sentiment_mlops.serving.launcher import ServerProcess, server_env
from sentiment_mlops.serving.loader import HARD_LIMIT_SECONDS
from sentiment_mlops.train import DataSpec, fit, load_split

from ..apps import SECRET, bearer
from ..processes import children, command_line


def train_into(var: Path, config: TrainConfig | None = None, alias: str | None = None) -> int:
    """Train the default model on the built-in data and register it in `var`'s store."""
    config, spec = config or TrainConfig(), DataSpec()
    registry = Registry(Settings(var_dir=var))
    result = fit(load_split(spec, config), config, spec)
    return registry.register_training(result, alias).version


def register_into(var: Path, pipeline: Pipeline, alias: str | None = None) -> int:
    """Register an already fitted pipeline as a new version in `var`'s store: for tests about
    serving, where fitting again would only cost time."""
    registry = Registry(Settings(var_dir=var))
    version = registry.register(
        pipeline,
        params={"source": "tests"},
        metrics={},
        tags={"data_source": "tests"},
        alias=alias,
    )
    return version.version


def start_server(
    var: Path,
    log_path: Path,
    workers: int = 1,
    *,
    max_open_files: int | None = None,
    metrics_dir: Path | None = None,
    **settings: object,
) -> ServerProcess:
    """`sentiment serve` over `var`'s registry, signing with the test secret; `metrics_dir`
    becomes its PROMETHEUS_MULTIPROC_DIR."""
    env = server_env(var, **{"jwt_secret": SECRET, "shutdown_grace_seconds": 0.5, **settings})
    if metrics_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    return ServerProcess(env, log_path, workers, max_open_files)


# How long a test waits for a server to start serving a model (a worker started or replaced, a
# promotion polled): the server's own bounds on a load, which a loaded machine can need much
# of: model_load_timeout_seconds for the wait, after which a slow load is still kept when it
# ends, and the loader child's HARD_LIMIT_SECONDS, after which it is killed; plus a margin for
# the process start, the poll and the log line.
LOAD_BOUND = max(Settings().model_load_timeout_seconds, HARD_LIMIT_SECONDS) + 30


def wait_for(what: str, check: Callable[[], Any], timeout: float = LOAD_BOUND) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`
    (by default the server's bound on loading a model, `LOAD_BOUND`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def worker_pids(srv: ServerProcess) -> set[int]:
    """The parent's worker processes (its spawned children but multiprocessing's tracker)."""
    return {pid for pid in children(srv.proc.pid) if b"spawn_main" in command_line(pid)}


def serving(srv: ServerProcess, version: int) -> set[int]:
    """Pids that logged serving `version`."""
    return {
        r["pid"]
        for r in srv.log_records()
        if r.get("msg") == "serving model version" and r.get("model_version") == version
    }


@dataclass(frozen=True)
class Answer:
    """One response a `Traffic` client got: when, its status, and its JSON body (2xx only)."""

    at: float
    status: int
    body: dict[str, Any] | None


class Traffic:
    """`clients` keep-alive clients sending `POST /predict` back to back until the block
    ends, recording every answer (`answers`) and every transport error (`errors`).

    `body(client, sent)` makes each request's JSON, so a test can vary the texts.
    """

    def __init__(
        self,
        url: str,
        clients: int,
        body: Callable[[int, int], dict[str, Any]] = lambda _client, _sent: {
            "text": "the crew was lovely"
        },
        timeout: float = 30.0,
    ) -> None:
        self.answers: list[Answer] = []
        self.errors: list[str] = []
        self._body = body
        self._timeout = timeout
        self._stop = threading.Event()
        self._url = url
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)
        ]

    def _run(self, client_number: int) -> None:
        headers = bearer("predict")
        with httpx.Client(base_url=self._url, headers=headers, timeout=self._timeout) as client:
            sent = 0
            while not self._stop.is_set():
                sent += 1
                try:
                    response = client.post("/predict", json=self._body(client_number, sent))
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                ok = 200 <= response.status_code < 300
                body = response.json() if ok else None
                self.answers.append(Answer(time.monotonic(), response.status_code, body))

    def statuses(self) -> set[int]:
        return {answer.status for answer in list(self.answers)}

    def answered_between(self, start: float, end: float) -> int:
        return sum(1 for answer in list(self.answers) if start <= answer.at <= end)

    def wait_for_version(self, version: int, timeout: float) -> float:
        """When the first answer from model `version` came."""
        hits = wait_for(
            f"a response from version {version}",
            lambda: [
                a.at for a in list(self.answers) if a.body and a.body["model_version"] == version
            ],
            timeout=timeout,
        )
        return float(min(hits))

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
