"""Promotion in the registry reaches a running server through its poll, under concurrent
load (the last one with CPU hogs beside it too), without a failed request; a version that fails
verification on the way is refused while the previous one keeps serving. Every load here runs
past its timeout, as on a saturated machine: it is let finish, counted as slow, and never as a
registry error; the refusal of a slow load is taken when it returns. (The pool's refusal
paths and requests spanning a swap are tested in process in tests/unit/test_model_pool.py.)"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sklearn.pipeline import Pipeline

from sentiment_mlops.config import Settings
from sentiment_mlops.registry import Registry

from .server import LOAD_BOUND, Traffic, register_into, start_server, wait_for

POLL_SECONDS = 1.0
CLIENTS = 4
# Shorter than any load takes (a loader child's imports alone take seconds of CPU), so every
# swap overruns it as a CPU-starved one would.
LOAD_TIMEOUT_SECONDS = 0.3
HOGS = 2


@contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    """`count` busy processes beside the server, stopped on every path."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_tampered_version_is_refused_then_a_promotion_swaps_under_load(
    tmp_path: Path, default_model: Pipeline
) -> None:
    var = tmp_path / "var"
    register_into(var, default_model)
    registry = Registry(Settings(var_dir=var))
    tampered = register_into(var, default_model)
    good = register_into(var, default_model)
    run_id = registry.version(tampered).run_id
    (artifact,) = (var / "mlartifacts").glob(f"{run_id}/artifacts/model/model.skops")
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"tampered!!")
    srv = start_server(
        var,
        tmp_path / "server.log",
        reload_interval_seconds=POLL_SECONDS,
        model_load_timeout_seconds=LOAD_TIMEOUT_SECONDS,
    )
    try:
        srv.wait_ready()
        with Traffic(srv.url, CLIENTS, timeout=10) as traffic:
            registry.promote(tampered, "champion")
            wait_for(
                "the tampered version to be refused",
                lambda: any(r.get("msg") == "refused model version" for r in srv.log_records()),
                timeout=POLL_SECONDS + LOAD_BOUND,
            )
            refused_metrics = httpx.get(f"{srv.url}/metrics").text
            ready_while_refused = httpx.get(f"{srv.url}/ready").json()
            # The hogs only for the swap that must get through them: beside the other test
            # files' servers they slow the whole suite too.
            with cpu_hogs(HOGS):
                registry.promote(good, "champion")
                # Bounded by the server's own limits: the poll that sees the promotion, the
                # load (a slow one is let run up to the loader's hard limit), the poll that
                # serves it.
                first_good = traffic.wait_for_version(good, timeout=2 * POLL_SECONDS + LOAD_BOUND)
            time.sleep(1.0)
            settled_metrics = httpx.get(f"{srv.url}/metrics").text
    finally:
        srv.stop()
    assert traffic.errors == []
    assert traffic.statuses() == {200}
    assert len(traffic.answers) > 100
    assert 'model_reloads_total{result="failure",variant="champion"}' in refused_metrics
    # Slow loads are told apart from a registry that does not answer: no registry error.
    assert 'model_reloads_total{result="slow",variant="champion"}' in settled_metrics
    assert "model_registry_errors_total{" not in settled_metrics
    assert any(r.get("msg") == "model load slow" for r in srv.log_records())
    assert ready_while_refused == {
        "status": "ready",
        "detail": "champion version 1",
        "prediction_log": "ok",
    }
    refused = [r for r in srv.log_records() if r.get("msg") == "refused model version"]
    assert refused and "does not match the registered" in refused[0]["error"]
    ordered = sorted((a.at, a.body["model_version"]) for a in traffic.answers if a.body)
    versions = [v for _, v in ordered]
    assert tampered not in versions
    # Every answer before the swap came from version 1, every one after it from the new one:
    # after the first answer from the new version, only requests already in flight (one per
    # client at most) may still finish on version 1.
    assert set(versions) == {1, good}
    late_old = [t for t, v in ordered if v == 1 and t > first_good]
    assert len(late_old) <= CLIENTS
    # The first version was loaded by the worker itself (nothing served yet); the tampered one
    # was checked, and the good one loaded, in child processes, so the worker's event loop
    # kept answering meanwhile (benchmarks/hot_swap.py measures what that is worth).
    (first,) = [r for r in srv.log_records() if r.get("model_version") == 1 and "scorer" in r]
    (swap,) = [r for r in srv.log_records() if r.get("model_version") == good and "scorer" in r]
    assert first["loaded_by"] == first["pid"]
    assert swap["loaded_by"] not in {swap["pid"], first["loaded_by"]}
