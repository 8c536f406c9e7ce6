"""`sentiment serve` as users run it: the registry's champion over HTTP, with JSON logs."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sklearn.pipeline import Pipeline

from sentiment_mlops.serving.launcher import ServerProcess, free_port, server_env

from ..apps import SECRET, bearer, eventually
from .server import register_into, start_server


def test_sentiment_serve_answers_from_the_registry_and_logs_json(
    tmp_path: Path, default_model: Pipeline
) -> None:
    var = tmp_path / "var"
    version = register_into(var, default_model)
    srv = start_server(var, tmp_path / "serve.log", reload_interval_seconds=3600)
    try:
        srv.wait_ready()
        response = httpx.post(
            f"{srv.url}/predict",
            json={"text": "Thanks for the great service"},
            headers={**bearer("predict"), "X-Request-ID": "serve-1"},
        )
        unauthenticated = httpx.post(f"{srv.url}/predict", json={"text": "great"})
        models = httpx.get(f"{srv.url}/models", headers=bearer("predict")).json()["models"]
    finally:
        srv.stop()
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "positive"
    assert response.json()["model_version"] == version
    assert unauthenticated.status_code == 401
    assert [(m["alias"], m["version"], m["scorer"]) for m in models] == [
        ("champion", version, "compiled")
    ]
    records = srv.log_records()
    (line,) = [r for r in records if r.get("request_id") == "serve-1"]
    assert (
        line["route"] == "/predict" and line["status"] == 200 and line["model_version"] == version
    )
    assert any(r.get("msg") == "serving model version" for r in records)


def get(url: str) -> httpx.Response | None:
    """The response, or None while nothing listens there yet."""
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None


def unreachable_resolves(url: str) -> float:
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == "model_registry_errors_total"
        and sample.labels == {"operation": "resolve", "reason": "unreachable"}
    )


def test_sentiment_serve_listens_while_its_registry_refuses_connections(tmp_path: Path) -> None:
    """With its PostgreSQL store refusing connections, `sentiment serve` did not listen for
    as long as MLflow retried (~100 s here) while its log filled with MLflow's tracebacks.
    Now /health answers at once, /ready and /predict say why there is no model, and the log
    says it once, however often the registry is polled."""
    uri = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/sentiment"
    env = server_env(
        tmp_path / "var", jwt_secret=SECRET, reload_interval_seconds=0.2, shutdown_grace_seconds=0.5
    )
    started = time.monotonic()
    with ServerProcess({**env, "MLFLOW_TRACKING_URI": uri}, tmp_path / "serve.log") as srv:
        health = eventually(lambda: get(f"{srv.url}/health"), "the server listens", timeout=60)
        listening_after = time.monotonic() - started
        ready = eventually(
            lambda: (r := get(f"{srv.url}/ready")) and "unreachable" in r.text and r,
            "/ready says the registry is unreachable",
        )
        eventually(lambda: unreachable_resolves(srv.url) >= 10, "ten polls of the registry")
        predict = httpx.post(
            f"{srv.url}/predict", json={"text": "great"}, headers=bearer("predict")
        )
    log = srv.log_path.read_text(errors="replace")
    records = srv.log_records()
    assert health.status_code == 200
    assert listening_after < 30, "listening long before MLflow's retries would have ended"
    assert ready.status_code == 503
    detail = ready.json()["detail"]
    assert detail.startswith("no verified 'champion' model is loaded yet: registry unreachable: ")
    assert "Connection refused" in detail
    assert predict.status_code == 503 and predict.json()["detail"] == detail
    states = [r for r in records if "registry_state" in r]
    assert [(r["msg"], r["alias"]) for r in states] == [("model registry unreachable", "champion")]
    assert "Traceback" not in log
    access = '"logger": "sentiment_mlops.serving.access"'  # the test's own requests
    lines = [line for line in log.splitlines() if access not in line]
    assert len(lines) < 20, "\n".join(lines)  # 13 here: usage hint, uvicorn, the one above
