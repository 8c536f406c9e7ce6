"""The real server for process-level tests: trained into a registry, started as users start it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sklearn.pipeline import Pipeline

from sentiment_mlops.config import Settings, TrainConfig
from sentiment_mlops.registry import Registry
from sentiment_mlops.serving.launcher import ServerProcess, server_env
from sentiment_mlops.train import DataSpec, fit, load_split

from ..apps import SECRET


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


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def worker_pids(srv: ServerProcess) -> set[int]:
    """The parent's worker processes (its spawned children but multiprocessing's tracker)."""
    parent = srv.proc.pid
    pids = set()
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                pids.add(int(child))
        except FileNotFoundError:
            continue
    return pids


def serving(srv: ServerProcess, version: int) -> set[int]:
    """Pids that logged serving `version`."""
    return {
        r["pid"]
        for r in srv.log_records()
        if r.get("msg") == "serving model version" and r.get("model_version") == version
    }
