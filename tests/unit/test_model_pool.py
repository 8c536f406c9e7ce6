"""The model pool in process: what it refuses, what it keeps serving, how it swaps, and how
it reports a registry that is down, frozen or missing the alias."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.pipeline import Pipeline

from sentiment_mlops.registry import IntegrityError, RegistryError
from sentiment_mlops.scorer import Scorer
from sentiment_mlops.serving import models
from sentiment_mlops.serving.app import create_app
from sentiment_mlops.serving.metrics import Metrics
from sentiment_mlops.serving.models import (
    ModelPool,
    ModelSource,
    NoModelLoaded,
    PreparedModel,
    ReloadOutcome,
    ServingModel,
    load_here,
)
from sentiment_mlops.serving.routing import RoutingConfig

from ..apps import api_settings, bearer, captured_logs, eventually, ready_client
from ..fakes import FakeSource, Gated, Misbehaving

CLASSES = ("negative", "positive")


def champion_only() -> RoutingConfig:
    return RoutingConfig.single("champion")


def _pool(source: FakeSource) -> tuple[ModelPool, Metrics]:
    metrics = Metrics()
    return ModelPool(
        source, champion_only, metrics, timeout_seconds=10, load_timeout_seconds=10
    ), metrics


def refresh(pool: ModelPool) -> list[ReloadOutcome]:
    """One refresh's outcomes per alias."""
    return asyncio.run(pool.refresh()).models


def answering(pool: ModelPool) -> ServingModel:
    return pool.answering(None).model


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_loads_the_alias_then_reports_unchanged(default_model: Pipeline) -> None:
    source = FakeSource({1: default_model}, {"champion": 1})
    pool, metrics = _pool(source)
    (first,) = refresh(pool)
    (second,) = refresh(pool)
    assert (first.result, first.version) == ("loaded", 1)
    assert (second.result, second.version) == ("unchanged", 1)
    assert source.loads == [1], "an unchanged alias is not downloaded again"
    assert answering(pool).version == 1 and answering(pool).scorer.kind == "compiled"
    assert _sample(metrics, "model_reloads_total", variant="champion", result="success") == 1


def test_missing_alias_serves_nothing() -> None:
    pool, _ = _pool(FakeSource({}, {}))
    (outcome,) = refresh(pool)
    assert outcome.result == "missing"
    with pytest.raises(NoModelLoaded, match="no verified 'champion' model"):
        answering(pool)


REFUSALS = {
    "nan": (lambda n: np.full((n, 2), np.nan), "not finite"),
    "not-summing-to-one": (lambda n: np.full((n, 2), 0.7), "do not sum to 1"),
    "wrong-shape": (lambda n: np.full((n, 3), 1 / 3), "expected (4, 2)"),
    "one-column": (lambda n: np.ones((n, 1)), "expected (4, 2)"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_model_with_broken_probabilities_is_refused_and_the_old_one_kept(
    default_model: Pipeline, case: str
) -> None:
    make, message = REFUSALS[case]
    source = FakeSource({1: default_model, 2: Misbehaving(make, CLASSES)}, {"champion": 1})
    pool, metrics = _pool(source)
    refresh(pool)
    source.aliases["champion"] = 2
    with captured_logs() as lines:
        (outcome,) = refresh(pool)
    assert outcome.result == "failed" and outcome.version == 2
    assert outcome.error is not None and message in outcome.error
    assert answering(pool).version == 1
    assert _sample(metrics, "model_reloads_total", variant="champion", result="failure") == 1
    (refused,) = [r for r in lines if r["msg"] == "refused model version"]
    assert refused["model_version"] == 2 and message in refused["error"]


@pytest.mark.parametrize(
    "error",
    [
        RegistryError("cannot fetch the artifact of version 2 from s3://x: timed out"),
        IntegrityError("refusing to load version 2: artifact sha256 does not match"),
    ],
    ids=["download-error", "tampered"],
)
def test_a_version_that_fails_to_load_is_refused(default_model: Pipeline, error: Exception) -> None:
    source = FakeSource({1: default_model, 2: default_model}, {"champion": 1})
    source.load_errors[2] = error
    pool, metrics = _pool(source)
    refresh(pool)
    source.aliases["champion"] = 2
    (outcome,) = refresh(pool)
    assert outcome.result == "failed" and outcome.error == str(error)
    assert answering(pool).version == 1
    assert _sample(metrics, "model_reloads_total", variant="champion", result="failure") == 1
    assert (
        _sample(
            metrics,
            "model_info",
            model_version="1",
            variant="champion",
            sha256=answering(pool).sha256,
            scorer="compiled",
        )
        == 1
    )


def test_registry_unreachable_keeps_serving(default_model: Pipeline) -> None:
    source = FakeSource({1: default_model}, {"champion": 1})
    pool, _ = _pool(source)
    refresh(pool)
    source.resolve_error = ConnectionError("connection refused")
    (outcome,) = refresh(pool)
    assert outcome.result == "unreachable"
    assert outcome.error == "registry unreachable: connection refused"
    assert answering(pool).version == 1


def test_unreachable_missing_and_back_are_told_apart_logged_once_each_and_counted(
    default_model: Pipeline,
) -> None:
    """The registry going down was reported as "missing", unlogged and uncounted, while MLflow
    wrote tracebacks; now each state is its own result, one log line when it starts or ends."""
    source = FakeSource({1: default_model}, {})
    pool, metrics = _pool(source)
    source.resolve_error = ConnectionError("connection refused")
    with captured_logs() as lines:
        results = [refresh(pool)[0].result for _ in range(3)]
        source.resolve_error = None
        results += [refresh(pool)[0].result for _ in range(2)]
        source.aliases["champion"] = 1
        results.append(refresh(pool)[0].result)
    assert results == ["unreachable"] * 3 + ["missing"] * 2 + ["loaded"]
    states = [(r["msg"], r.get("error")) for r in lines if "registry_state" in r]
    assert states == [
        ("model registry unreachable", "registry unreachable: connection refused"),
        ("model registry answers again", None),
    ]
    assert all(r["alias"] == "champion" for r in lines if "registry_state" in r)
    assert [r["msg"] for r in lines].count("alias not set in the registry") == 1
    errors = {"operation": "resolve", "reason": "unreachable"}
    assert _sample(metrics, "model_registry_errors_total", **errors) == 3
    assert answering(pool).version == 1


@pytest.mark.parametrize("operation", ["resolve", "load"])
def test_a_frozen_registry_call_times_out_without_piling_up_and_then_recovers(
    tmp_path: Path, default_model: Pipeline, operation: str
) -> None:
    """A frozen registry database made /admin/reload hang, logging nothing. Now the call that
    hangs is answered as a timeout, the old model keeps serving, no second call is stacked
    behind the stuck one, and once it returns the next reload swaps the new version in."""
    source = FakeSource({1: default_model, 2: default_model}, {"champion": 1})
    settings = api_settings(tmp_path, registry_timeout_seconds=0.5, model_load_timeout_seconds=0.5)
    app = create_app(settings, source)
    frozen = threading.Event()

    def reload() -> dict:
        result: dict = client.post("/admin/reload").json()["results"][0]
        return result

    with ready_client(app, headers=bearer("predict", "admin")) as client, captured_logs() as lines:
        source.aliases["champion"] = 2
        if operation == "resolve":
            source.before_resolve = lambda alias: frozen.wait(60)
        else:
            source.before_load = lambda version: frozen.wait(60)
        calls_before = (source.resolves, len(source.loads))
        started = time.monotonic()
        first = reload()
        answered_after = time.monotonic() - started
        second = reload()
        calls_while_stuck = (source.resolves, len(source.loads))
        during = client.post("/predict", json={"text": "great flight"})
        metrics = client.get("/metrics").text
        frozen.set()
        eventually(lambda: reload()["result"] == "loaded", "a reload once the call returned")
        after = client.post("/predict", json={"text": "great flight"}).json()
        loads_after = len(source.loads)
    # A load that overran is kept when it finishes (on a saturated machine the loader is
    # slowed by the CPU, and starting it again at each poll would never finish): no second
    # load of version 2; a resolve's late answer is stale, and the next poll asks again.
    assert loads_after == calls_before[1] + 1
    late = [r for r in lines if r["msg"] == "late model load kept"]
    assert [(r["alias"], r["model_version"]) for r in late] == (
        [("champion", 2)] if operation == "load" else []
    )
    assert answered_after < 10, "answered after the timeout, not when the call returned"
    assert calls_while_stuck == (calls_before[0] + 1, calls_before[1] + (operation == "load"))
    assert during.status_code == 200 and during.json()["model_version"] == 1
    assert after["model_version"] == 2
    states = [r["msg"] for r in lines if "registry_state" in r]
    slow = [r for r in lines if r["msg"] == "model load slow"]
    if operation == "resolve":
        assert (first["result"], first["version"]) == ("timeout", None)
        assert "did not answer the resolve of alias 'champion' within 0.5 s" in first["error"]
        assert second["result"] == "timeout" and "no new call until it does" in second["error"]
        assert 'model_registry_errors_total{operation="resolve",reason="timeout"} 2.0' in metrics
        assert states == ["model registry did not answer in time", "model registry answers again"]
        assert slow == []
        return
    # A load past its timeout is slow, not a registry error: the registry answered the resolve
    # (on a saturated machine the CPU is what the loader waits for). It is let finish, and
    # the polls meanwhile report "loading" without asking the registry again.
    assert (first["result"], first["version"]) == ("loading", 2)
    assert "took longer than the 0.5 s load timeout; it is let finish" in first["error"]
    assert second["result"] == "loading" and "still loading" in second["error"]
    assert "model_registry_errors_total{" not in metrics
    assert 'model_reloads_total{result="slow",variant="champion"} 1.0' in metrics
    assert [(r["alias"], r["model_version"]) for r in slow] == [("champion", 2)]
    assert states == []


def test_a_slow_load_that_fails_is_refused_once_not_started_again(
    tmp_path: Path, default_model: Pipeline
) -> None:
    """A slow load's failure used to be dropped when it came back: the next poll started the
    same load again, slow again, and the version was never refused (nor logged)."""
    broken = Misbehaving(lambda n: np.full((n, 2), np.nan), CLASSES)
    source = FakeSource({1: default_model, 2: broken}, {"champion": 1})
    settings = api_settings(tmp_path, registry_timeout_seconds=5, model_load_timeout_seconds=0.2)
    released = threading.Event()
    with (
        ready_client(create_app(settings, source), headers=bearer("admin")) as client,
        captured_logs() as lines,
    ):
        source.aliases["champion"] = 2
        source.before_load = lambda version: released.wait(60)
        first = client.post("/admin/reload").json()["results"][0]
        released.set()
        eventually(
            lambda: client.post("/admin/reload").json()["results"][0]["result"] == "failed",
            "the slow load's refusal",
        )
        loads = len(source.loads)
    assert first["result"] == "loading"
    assert loads == 2  # version 1 at startup, version 2 once
    refused = [r for r in lines if r["msg"] == "refused model version"]
    assert [(r["alias"], r["model_version"]) for r in refused] == [("champion", 2)]


def test_a_load_stuck_past_the_loaders_hard_limit_is_a_registry_timeout(
    tmp_path: Path, default_model: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load let run as slow is bounded: past the hard limit a child would be killed at, the
    polls say the registry did not answer (a frozen store, not a busy CPU)."""
    monkeypatch.setattr(models, "HARD_LIMIT_SECONDS", 1.0)
    source = FakeSource({1: default_model, 2: default_model}, {"champion": 1})
    settings = api_settings(tmp_path, registry_timeout_seconds=0.2, model_load_timeout_seconds=0.2)
    frozen = threading.Event()
    with ready_client(create_app(settings, source), headers=bearer("admin")) as client:
        source.aliases["champion"] = 2
        source.before_load = lambda version: frozen.wait(60)
        try:
            first = client.post("/admin/reload").json()["results"][0]
            eventually(
                lambda: client.post("/admin/reload").json()["results"][0]["result"] == "timeout",
                "a registry timeout past the hard limit",
            )
            metrics = client.get("/metrics").text
        finally:
            frozen.set()
    assert first["result"] == "loading"
    assert 'model_registry_errors_total{operation="resolve",reason="timeout"}' in metrics


def test_health_answers_at_once_and_ready_says_why_until_the_model_is_loaded(
    tmp_path: Path, default_model: Pipeline
) -> None:
    """The server did not listen while the store was unreadable: its startup waited for the
    first load. Now /health answers at once; /ready and /predict answer 503 with the reason
    (looking the alias up, loading the version) until the verified model is in."""
    source = FakeSource({3: default_model}, {"champion": 3})
    looked_up, loaded = threading.Event(), threading.Event()
    source.before_resolve = lambda alias: looked_up.wait(60)
    source.before_load = lambda version: loaded.wait(60)
    settings = api_settings(tmp_path, registry_timeout_seconds=60, startup_model_wait_seconds=0)
    app = create_app(settings, source)
    waiting = "no verified 'champion' model is loaded yet: "

    def reason() -> str:
        detail: str = client.get("/ready").json()["detail"]
        return detail

    with TestClient(app, headers=bearer("predict")) as client:
        health = client.get("/health")
        looking = (client.get("/ready").status_code, reason())
        predict_looking = client.post("/predict", json={"text": "great"})
        looked_up.set()
        eventually(lambda: reason() == f"{waiting}loading version 3", "/ready says it loads")
        predict_loading = client.post("/predict", json={"text": "great"})
        loaded.set()
        eventually(lambda: client.get("/ready").status_code == 200, "/ready turns 200")
        served = client.post("/predict", json={"text": "great"})
    assert health.status_code == 200
    assert looking == (503, f"{waiting}looking up alias 'champion' in the registry")
    assert predict_looking.status_code == 503
    assert predict_looking.json()["detail"] == looking[1]
    assert predict_loading.status_code == 503
    assert predict_loading.json()["detail"] == f"{waiting}loading version 3"
    assert served.status_code == 200 and served.json()["model_version"] == 3


def test_unreachable_at_startup_is_the_reason_until_the_registry_answers(
    tmp_path: Path, default_model: Pipeline
) -> None:
    source = FakeSource({1: default_model}, {"champion": 1})
    source.resolve_error = ConnectionError("connection refused")
    app = create_app(api_settings(tmp_path, reload_interval_seconds=0.05), source)
    expected = (
        "no verified 'champion' model is loaded yet: registry unreachable: connection refused"
    )
    with TestClient(app, headers=bearer("predict")) as client:
        eventually(lambda: client.get("/ready").json()["detail"] == expected, "the reason given")
        ready = client.get("/ready")
        predict = client.post("/predict", json={"text": "great"})
        source.resolve_error = None
        eventually(lambda: client.get("/ready").status_code == 200, "/ready turns 200")
        served = client.post("/predict", json={"text": "great"})
    assert ready.status_code == 503
    assert (ready.json()["status"], ready.json()["detail"]) == ("not ready", expected)
    assert predict.status_code == 503 and predict.json()["detail"] == expected
    assert served.status_code == 200


def test_refused_at_startup_means_not_ready(tmp_path: Path) -> None:
    broken = Misbehaving(lambda n: np.full((n, 2), np.nan), CLASSES)
    app = create_app(api_settings(tmp_path), FakeSource({1: broken}, {"champion": 1}))
    with TestClient(app) as client:
        detail = eventually(
            lambda: "refused" in (d := client.get("/ready").json()["detail"]) and d,
            "/ready says the version was refused",
        )
        assert client.get("/ready").status_code == 503
        assert client.get("/health").status_code == 200
    assert detail.startswith("no verified 'champion' model is loaded yet: version 1 refused: ")
    assert "not finite" in detail


def test_requests_in_flight_finish_on_the_old_model_while_new_ones_get_the_new(
    tmp_path: Path, default_model: Pipeline
) -> None:
    """Batches held inside version 1's scorer span a swap to version 2; a steady client
    runs alongside. Nothing fails, the held batches answer from version 1 with its numbers,
    and every request after the swap answers from version 2."""
    gated = Gated(default_model)
    source = FakeSource({1: gated, 2: default_model}, {"champion": 1})
    app = create_app(api_settings(tmp_path), source)
    held_texts = [f"HOLD the crew was lovely {i}" for i in range(40)]  # over the inline limit
    expected = default_model.predict_proba(held_texts)[:, 1]
    steady: list[tuple[int, int | None]] = []
    stop = threading.Event()
    with (
        ready_client(app, headers=bearer("predict", "admin")) as client,
        ThreadPoolExecutor(6) as ex,
    ):

        def hold() -> tuple[int, dict]:
            response = client.post("/predict/batch", json={"texts": held_texts})
            return response.status_code, response.json()

        def steady_client() -> None:
            while not stop.is_set():
                response = client.post("/predict", json={"text": "great flight"})
                version = response.json().get("model_version") if response.is_success else None
                steady.append((response.status_code, version))

        held = [ex.submit(hold) for _ in range(4)]
        for _ in held:
            assert gated.arrived.acquire(timeout=30), "held request never reached the scorer"
        runner = ex.submit(steady_client)
        source.aliases["champion"] = 2
        reload = client.post("/admin/reload").json()["results"][0]
        after = client.post("/predict", json={"text": "great flight"}).json()
        gated.release.set()
        results = [future.result(timeout=60) for future in held]
        stop.set()
        runner.result(timeout=60)
    assert reload["result"] == "loaded" and reload["version"] == 2
    assert after["model_version"] == 2
    for status, body in results:
        assert status == 200
        assert {p["model_version"] for p in body["predictions"]} == {1}
        got = [p["probabilities"]["positive"] for p in body["predictions"]]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert steady and {status for status, _ in steady} == {200}
    versions = [version for _, version in steady]
    switch = versions.index(2) if 2 in versions else len(versions)
    assert set(versions[:switch]) <= {1} and set(versions[switch:]) == {2}


def test_a_starting_worker_takes_requests_once_its_first_model_is_in(
    tmp_path: Path, default_model: Pipeline
) -> None:
    """With several workers on one socket, a worker that listened before its model was loaded
    refused (503) requests a sibling could have served. Startup now waits for the first load
    (bounded by SENTIMENT_STARTUP_MODEL_WAIT_SECONDS): the first request is served."""
    source = FakeSource({1: default_model}, {"champion": 1})
    app = create_app(api_settings(tmp_path), source)
    with TestClient(app, headers=bearer("predict")) as client:
        first = client.post("/predict", json={"text": "great"})
    assert first.status_code == 200 and first.json()["model_version"] == 1


def test_the_first_load_runs_here_and_swaps_go_to_the_swap_loader(
    default_model: Pipeline,
) -> None:
    """Only a load made while another version serves is handed to `swap_loader` (the server's
    child process): before that nothing can stall, and the child's imports would only delay
    readiness."""
    source = FakeSource({1: default_model, 2: default_model}, {"champion": 1})
    swapped: list[int] = []

    def swap_loader(src: ModelSource, version: int) -> PreparedModel:
        swapped.append(version)
        return load_here(src, version)

    pool = ModelPool(
        source,
        champion_only,
        Metrics(),
        timeout_seconds=10,
        load_timeout_seconds=10,
        swap_loader=swap_loader,
    )
    refresh(pool)
    assert (swapped, source.loads) == ([], [1])
    source.aliases["champion"] = 2
    (outcome,) = refresh(pool)
    assert (outcome.result, swapped, source.loads) == ("loaded", [2], [1, 2])
    assert answering(pool).version == 2


def test_a_loaded_version_serves_only_once_before_serving_returns(
    default_model: Pipeline,
) -> None:
    """The online features open the store in `before_serving`: until it returns, the new
    version must not answer (its first requests would get defaults)."""
    calls: list[Scorer] = []

    async def before_serving(scorer: Scorer) -> None:
        with pytest.raises(NoModelLoaded):
            answering(pool)
        calls.append(scorer)

    pool = ModelPool(
        FakeSource({1: default_model}, {"champion": 1}),
        champion_only,
        Metrics(),
        timeout_seconds=10,
        load_timeout_seconds=10,
        before_serving=before_serving,
    )
    (outcome,) = refresh(pool)
    assert outcome.result == "loaded"
    assert calls == [answering(pool).scorer]
