"""`POST /token` under attack, in process: the failure lockout per client id and per address,
and secret checks bounded so a flood of wrong secrets leaves `/predict` alone (`throttle`).

The original failures: 50 wrong secrets in 3.5 s, and the right one still worked at once after;
40 threads of wrong secrets raised /predict's p50 from 5 ms to 271 ms and memory by ~500 MiB.
Tests count checks instead of timing them; the lockout window moves on a fake clock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import limits.storage.memory
import pytest
from fastapi.testclient import TestClient
from sklearn.pipeline import Pipeline

from sentiment_mlops.serving import throttle
from sentiment_mlops.serving.app import create_app
from sentiment_mlops.serving.clients import ClientStore, add_client
from sentiment_mlops.serving.deps import get_clients
from sentiment_mlops.serving.throttle import ChecksBusy, TokenThrottle

from ..apps import api_settings, bearer
from ..fakes import FakeSource


class Clock:
    """Stands in for the `time` module of the `limits` memory storage and of `throttle`."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(limits.storage.memory, "time", fake)
    monkeypatch.setattr(throttle, "time", fake)
    return fake


class WatchedStore(ClientStore):
    """The real store, counting the secret checks it runs, how many at once, and in which
    threads; while `hold` is set each check waits for `release`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self.calls = self.running = self.most_running = 0
        self.threads: set[str] = set()
        self.hold, self.release = threading.Event(), threading.Event()
        self.arrived = threading.Semaphore(0)

    def authenticate(self, client_id: str, secret: str) -> frozenset[str] | None:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.threads.add(threading.current_thread().name)
        try:
            if self.hold.is_set():
                self.arrived.release()
                if not self.release.wait(timeout=60):
                    raise TimeoutError("the test never released the held check")
            return super().authenticate(client_id, secret)
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def var(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def secret(var: Path) -> str:
    return add_client(api_settings(var).clients_file(), "batch-job", ["predict"])


@pytest.fixture
def store(var: Path, secret: str) -> WatchedStore:
    return WatchedStore.load(api_settings(var).clients_file())


@contextmanager
def serve(var: Path, model: Pipeline, store: ClientStore, **overrides: Any) -> Iterator[TestClient]:
    app = create_app(api_settings(var, **overrides), FakeSource({1: model}, {"champion": 1}))
    app.dependency_overrides[get_clients] = lambda: store
    with TestClient(app) as client:
        yield client


@pytest.fixture
def http(var: Path, default_model: Pipeline, store: WatchedStore) -> Iterator[TestClient]:
    policy = {
        "token_failures_per_client": 5,
        "token_failures_per_address": 20,
        "token_failure_window_seconds": 60,
    }
    with serve(var, default_model, store, **policy) as client:
        yield client


def grant(client: TestClient, client_id: str, secret: str) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    return client.post("/token", data=form)


def refused(response: httpx.Response, status: int) -> int:
    """The Retry-After seconds of an RFC 6749 error response with `status`."""
    assert response.status_code == status, response.text
    assert response.json()["error"] == "temporarily_unavailable"
    assert response.headers["cache-control"] == "no-store"
    return int(response.headers["retry-after"])


def test_failed_secrets_lock_the_client_out_even_with_the_right_secret(
    http: TestClient, store: WatchedStore, secret: str, clock: Clock
) -> None:
    for _ in range(5):
        assert grant(http, "batch-job", "wrong").status_code == 401
    locked = grant(http, "batch-job", "wrong")
    assert refused(locked, 429) == 60
    assert "this client id" in locked.json()["error_description"]
    assert refused(grant(http, "batch-job", secret), 429) == 60
    assert store.calls == 5, "a locked-out attempt costs no secret check"
    clock.now += 30
    assert refused(grant(http, "batch-job", secret), 429) == 30
    clock.now += 31
    assert grant(http, "batch-job", secret).status_code == 200


def test_unknown_client_ids_are_locked_out_alike(http: TestClient, clock: Clock) -> None:
    """Otherwise the lockout would tell which client ids exist."""
    for _ in range(5):
        assert grant(http, "nobody", "wrong").status_code == 401
    assert refused(grant(http, "nobody", "wrong"), 429) == 60


def test_successes_are_not_counted(http: TestClient, secret: str, clock: Clock) -> None:
    for _ in range(4):
        assert grant(http, "batch-job", "wrong").status_code == 401
    for _ in range(8):
        assert grant(http, "batch-job", secret).status_code == 200


def test_failures_from_one_address_lock_it_out_across_client_ids(
    var: Path, default_model: Pipeline, store: WatchedStore, secret: str, clock: Clock
) -> None:
    with serve(
        var, default_model, store, token_failures_per_client=5, token_failures_per_address=4
    ) as http:
        for client_id in ["batch-job", "ghost-1", "ghost-2", "ghost-3"]:
            assert grant(http, client_id, "wrong").status_code == 401
        locked = grant(http, "batch-job", secret)
        assert refused(locked, 429) == 60
        assert "this address" in locked.json()["error_description"]
        elsewhere = TestClient(http.app, client=("192.0.2.7", 40000))
        assert grant(elsewhere, "batch-job", secret).status_code == 200


def test_checks_beyond_the_bound_are_refused_at_once_and_predict_still_answers(
    var: Path, default_model: Pipeline, store: WatchedStore
) -> None:
    with serve(var, default_model, store, token_checks_concurrent=2, token_checks_queued=0) as http:
        store.hold.set()
        with ThreadPoolExecutor(2) as attackers:
            held = [attackers.submit(grant, http, "batch-job", "wrong") for _ in range(2)]
            for _ in held:
                assert store.arrived.acquire(timeout=30), "a check never started"
            assert refused(grant(http, "batch-job", "wrong"), 503) == 1
            for _ in range(5):
                answer = http.post("/predict", json={"text": "great"}, headers=bearer("predict"))
                assert answer.status_code == 200, answer.text
            store.release.set()
            assert [future.result().status_code for future in held] == [401, 401]
    assert store.calls == 2 and store.most_running == 2
    assert all(name.startswith(throttle.THREAD_NAME_PREFIX) for name in store.threads)


def test_a_flood_of_wrong_secrets_runs_boundedly_while_predict_answers(
    var: Path, default_model: Pipeline, store: WatchedStore
) -> None:
    """40 threads of wrong secrets, real scrypt, /predict interleaved: never more than the
    configured checks at once, and no request fails."""
    settings = {
        "token_checks_concurrent": 2,
        "token_checks_queued": 4,
        "token_failures_per_client": 1000,
        "token_failures_per_address": 1000,
    }
    with serve(var, default_model, store, **settings) as http, ThreadPoolExecutor(40) as attackers:
        flood = [attackers.submit(grant, http, "batch-job", f"guess-{i}") for i in range(80)]
        answers = [
            http.post("/predict", json={"text": f"fine {i}"}, headers=bearer("predict"))
            for i in range(20)
        ]
        statuses = {future.result().status_code for future in flood}
    assert [answer.status_code for answer in answers] == [200] * 20
    assert statuses <= {401, 503} and 401 in statuses
    assert 1 <= store.most_running <= 2


def test_a_burst_cannot_outrun_the_lockout(
    var: Path, default_model: Pipeline, store: WatchedStore, clock: Clock
) -> None:
    """20 wrong secrets at once: attempts still waiting when the limit fills are refused when
    their turn comes, so only checks already running can go past it (limit + concurrent - 1)."""
    policy = {
        "token_failures_per_client": 5,
        "token_checks_concurrent": 2,
        "token_checks_queued": 20,
    }
    with serve(var, default_model, store, **policy) as http, ThreadPoolExecutor(20) as attackers:
        burst = [attackers.submit(grant, http, "batch-job", f"guess-{i}") for i in range(20)]
        statuses = [future.result().status_code for future in burst]
    assert 5 <= statuses.count(401) == store.calls <= 5 + 2 - 1
    assert statuses.count(429) == 20 - store.calls


def test_waiting_checks_are_bounded_too() -> None:
    async def scenario() -> None:
        bounded = TokenThrottle(
            failures_per_client=5,
            failures_per_address=20,
            window_seconds=60,
            concurrent=1,
            queued=1,
        )
        release = threading.Event()
        running = asyncio.create_task(bounded.check("a", "here", lambda: release.wait(timeout=60)))
        waiting = asyncio.create_task(bounded.check("b", "here", lambda: "waited"))
        await asyncio.sleep(0)  # both admitted: one running, one waiting
        with pytest.raises(ChecksBusy):
            await bounded.check("c", "here", lambda: "refused")
        release.set()
        assert await running is True
        assert await waiting == "waited"
        assert await bounded.check("c", "here", lambda: "admitted again") == "admitted again"
        bounded.close()

    asyncio.run(scenario())
