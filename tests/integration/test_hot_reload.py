"""Promotion in the registry reaches a running server without a failed request, and a
version that fails verification is refused while the previous one keeps serving."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sentiment_mlops.config import Settings, TrainConfig
from sentiment_mlops.registry import Registry
from sentiment_mlops.serving.tokens import Authenticator

from .server import SECRET, Server, train_into

POLL_SECONDS = 1.0


@pytest.fixture
def var(tmp_path: Path) -> Path:
    var = tmp_path / "var"
    train_into(var)
    return var


@pytest.fixture
def server(var: Path, tmp_path: Path) -> Iterator[Server]:
    srv = Server(var, tmp_path / "server.log", reload_interval_seconds=POLL_SECONDS)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def token(*scopes: str) -> str:
    return Authenticator.from_settings(Settings(jwt_secret=SECRET)).mint("t", scopes)  # type: ignore[arg-type]


class Traffic:
    """A client sending /predict back to back, recording every outcome."""

    def __init__(self, url: str) -> None:
        self.results: list[tuple[float, int, int | None]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token('predict')}"}, timeout=10
        )
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self._client.post("/predict", json={"text": "the crew was lovely"})
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))
                continue
            version = response.json().get("model_version") if response.status_code == 200 else None
            self.results.append((time.monotonic(), response.status_code, version))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._client.close()

    def wait_for_version(self, version: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [t for t, _, v in list(self.results) if v == version]
            if hits:
                return hits[0]
            time.sleep(0.05)
        raise TimeoutError(f"no response from version {version} within {timeout} s")


def test_promotion_swaps_models_under_load_without_errors(var: Path, server: Server) -> None:
    registry = Registry(Settings(var_dir=var))
    v2 = train_into(var, TrainConfig.model_validate({"classifier": {"C": 1.0}}))
    with Traffic(server.url) as traffic:
        time.sleep(0.5)
        promoted_at = time.monotonic()
        registry.promote(v2, "champion")
        first_v2 = traffic.wait_for_version(v2, timeout=POLL_SECONDS + 15)
        time.sleep(1.0)
    assert traffic.failures == []
    assert {status for _, status, _ in traffic.results} == {200}
    versions = [v for _, _, v in traffic.results]
    switch = versions.index(v2)
    assert set(versions[:switch]) == {1} and set(versions[switch:]) == {v2}
    # One poll interval, plus the time to download, verify, compile and warm up the model.
    assert first_v2 - promoted_at < POLL_SECONDS + 5
    assert len(traffic.results) > 50


def test_tampered_version_is_refused_and_the_old_one_keeps_serving(
    var: Path, server: Server
) -> None:
    registry = Registry(Settings(var_dir=var))
    v2 = train_into(var, TrainConfig.model_validate({"classifier": {"C": 1.0}}))
    run_id = registry.version(v2).run_id
    (artifact,) = (var / "mlartifacts").glob(f"{run_id}/artifacts/model/model.skops")
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"tampered!!")
    with Traffic(server.url) as traffic:
        registry.promote(v2, "champion")
        time.sleep(POLL_SECONDS * 3)
    assert traffic.failures == []
    assert {v for _, _, v in traffic.results} == {1}
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'model_reloads_total{result="failure",variant="champion"}' in metrics
    refused = [r for r in server.log_records() if r.get("msg") == "refused model version"]
    assert refused and "does not match the registered" in refused[0]["error"]
    ready = httpx.get(f"{server.url}/ready").json()
    assert ready == {"status": "ready", "detail": "champion version 1"}


def test_admin_reload_swaps_now(var: Path, tmp_path: Path) -> None:
    srv = Server(var, tmp_path / "slow.log", reload_interval_seconds=3600)
    try:
        srv.wait_ready()
        v2 = train_into(var, TrainConfig(seed=7))
        Registry(Settings(var_dir=var)).promote(v2, "champion")
        headers = {"Authorization": f"Bearer {token('admin')}"}
        response = httpx.post(f"{srv.url}/admin/reload", headers=headers, timeout=60)
        assert response.json()["results"][0] == {
            "alias": "champion",
            "version": v2,
            "result": "loaded",
            "error": None,
        }
        predict = httpx.post(
            f"{srv.url}/predict",
            json={"text": "great"},
            headers={"Authorization": f"Bearer {token('predict')}"},
        )
        assert predict.json()["model_version"] == v2
    finally:
        srv.stop()
