"""`sentiment serve` as users run it: the registry's champion over HTTP, with JSON logs."""

from __future__ import annotations

from pathlib import Path

import httpx
from sklearn.pipeline import Pipeline

from ..apps import bearer
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
