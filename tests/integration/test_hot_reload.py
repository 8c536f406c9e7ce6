"""Promotion in the registry reaches a running server through its poll, under concurrent
load, without a failed request; a version that fails verification on the way is refused while
the previous one keeps serving. (The pool's refusal paths and requests spanning a swap are
tested in process in tests/unit/test_model_pool.py.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
from sklearn.pipeline import Pipeline

from sentiment_mlops.config import Settings
from sentiment_mlops.registry import Registry

from ..apps import bearer
from .server import register_into, start_server, wait_for

POLL_SECONDS = 1.0
CLIENTS = 4


class Traffic:
    """`CLIENTS` keep-alive clients sending /predict back to back, recording every outcome."""

    def __init__(self, url: str) -> None:
        self.results: list[tuple[float, int, int | None]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._url = url
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _run(self) -> None:
        with httpx.Client(base_url=self._url, headers=bearer("predict"), timeout=10) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/predict", json={"text": "the crew was lovely"})
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                ok = response.status_code == 200
                version = response.json().get("model_version") if ok else None
                self.results.append((time.monotonic(), response.status_code, version))

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def wait_for_version(self, version: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [t for t, _, v in list(self.results) if v == version]
            if hits:
                return min(hits)
            time.sleep(0.05)
        raise TimeoutError(f"no response from version {version} within {timeout} s")


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
    srv = start_server(var, tmp_path / "server.log", reload_interval_seconds=POLL_SECONDS)
    try:
        srv.wait_ready()
        with Traffic(srv.url) as traffic:
            registry.promote(tampered, "champion")
            wait_for(
                "the tampered version to be refused",
                lambda: any(r.get("msg") == "refused model version" for r in srv.log_records()),
            )
            refused_metrics = httpx.get(f"{srv.url}/metrics").text
            ready_while_refused = httpx.get(f"{srv.url}/ready").json()
            registry.promote(good, "champion")
            # A bound, not a speed check: loading under CPU load takes a while.
            first_good = traffic.wait_for_version(good, timeout=POLL_SECONDS + 60)
            time.sleep(1.0)
    finally:
        srv.stop()
    assert traffic.failures == []
    assert {status for _, status, _ in traffic.results} == {200}
    assert len(traffic.results) > 100
    assert 'model_reloads_total{result="failure",variant="champion"}' in refused_metrics
    assert ready_while_refused == {
        "status": "ready",
        "detail": "champion version 1",
        "prediction_log": "ok",
    }
    refused = [r for r in srv.log_records() if r.get("msg") == "refused model version"]
    assert refused and "does not match the registered" in refused[0]["error"]
    ordered = sorted(traffic.results)
    versions = [v for _, _, v in ordered]
    assert tampered not in versions
    # Every answer before the swap came from version 1, every one after it from the new one:
    # after the first answer from the new version, only requests already in flight (one per
    # client at most) may still finish on version 1.
    assert set(versions) == {1, good}
    late_old = [t for t, _, v in ordered if v == 1 and t > first_good]
    assert len(late_old) <= CLIENTS
    # The first version was loaded by the worker itself (nothing served yet); the tampered one
    # was checked, and the good one loaded, in child processes, so the worker's event loop
    # kept answering meanwhile (benchmarks/hot_swap.py measures what that is worth).
    (first,) = [r for r in srv.log_records() if r.get("model_version") == 1 and "scorer" in r]
    (swap,) = [r for r in srv.log_records() if r.get("model_version") == good and "scorer" in r]
    assert first["loaded_by"] == first["pid"]
    assert swap["loaded_by"] not in {swap["pid"], first["loaded_by"]}
