"""The model pool in process: what it refuses, what it keeps serving, and how it swaps."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.pipeline import Pipeline

from sentiment_mlops.registry import IntegrityError, RegistryError
from sentiment_mlops.serving.app import create_app
from sentiment_mlops.serving.metrics import Metrics
from sentiment_mlops.serving.models import ModelPool, NoModelLoaded

from ..apps import api_settings, bearer, captured_logs
from ..fakes import FakeSource, Gated, Misbehaving

CLASSES = ("negative", "positive")


def _pool(source: FakeSource) -> tuple[ModelPool, Metrics]:
    metrics = Metrics()
    return ModelPool(source, ["champion"], metrics), metrics


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_loads_the_alias_then_reports_unchanged(default_model: Pipeline) -> None:
    source = FakeSource({1: default_model}, {"champion": 1})
    pool, metrics = _pool(source)
    (first,) = asyncio.run(pool.refresh())
    (second,) = asyncio.run(pool.refresh())
    assert (first.result, first.version) == ("loaded", 1)
    assert (second.result, second.version) == ("unchanged", 1)
    assert source.loads == [1], "an unchanged alias is not downloaded again"
    assert pool.answering().version == 1 and pool.answering().scorer.kind == "compiled"
    assert _sample(metrics, "model_reloads_total", variant="champion", result="success") == 1


def test_missing_alias_serves_nothing() -> None:
    pool, _ = _pool(FakeSource({}, {}))
    (outcome,) = asyncio.run(pool.refresh())
    assert outcome.result == "missing"
    with pytest.raises(NoModelLoaded, match="no verified 'champion' model"):
        pool.answering()


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
    asyncio.run(pool.refresh())
    source.aliases["champion"] = 2
    with captured_logs() as lines:
        (outcome,) = asyncio.run(pool.refresh())
    assert outcome.result == "failed" and outcome.version == 2
    assert outcome.error is not None and message in outcome.error
    assert pool.answering().version == 1
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
    asyncio.run(pool.refresh())
    source.aliases["champion"] = 2
    (outcome,) = asyncio.run(pool.refresh())
    assert outcome.result == "failed" and outcome.error == str(error)
    assert pool.answering().version == 1
    assert _sample(metrics, "model_reloads_total", variant="champion", result="failure") == 1
    assert (
        _sample(
            metrics,
            "model_info",
            model_version="1",
            variant="champion",
            sha256=pool.answering().sha256,
            scorer="compiled",
        )
        == 1
    )


def test_registry_unreachable_keeps_serving(default_model: Pipeline) -> None:
    source = FakeSource({1: default_model}, {"champion": 1})
    pool, _ = _pool(source)
    asyncio.run(pool.refresh())
    source.resolve_error = ConnectionError("registry database unreachable")
    (outcome,) = asyncio.run(pool.refresh())
    assert outcome.result == "failed" and "unreachable" in (outcome.error or "")
    assert pool.answering().version == 1


def test_refused_at_startup_means_not_ready(tmp_path: Path) -> None:
    broken = Misbehaving(lambda n: np.full((n, 2), np.nan), CLASSES)
    app = create_app(api_settings(tmp_path), FakeSource({1: broken}, {"champion": 1}))
    with TestClient(app) as client:
        assert client.get("/ready").status_code == 503
        assert client.get("/health").status_code == 200


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
    with TestClient(app, headers=bearer("predict", "admin")) as client, ThreadPoolExecutor(6) as ex:

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
