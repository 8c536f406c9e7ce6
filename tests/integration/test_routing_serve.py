"""Routing in `sentiment serve` as users run it: a shadow scored beside the champion, then a
routing file changed under the running server and applied by POST /admin/reload."""

from __future__ import annotations

from pathlib import Path

import httpx
from sklearn.pipeline import Pipeline

from sentiment_mlops.serving.routing import Router, RoutingConfig

from ..apps import bearer, write_routing
from .server import register_into, start_server, wait_for


def test_sentiment_serve_shadows_then_splits_after_a_reload(
    tmp_path: Path, default_model: Pipeline
) -> None:
    var = tmp_path / "var"
    champion = register_into(var, default_model, alias="champion")
    challenger = register_into(var, default_model, alias="challenger")
    routing = write_routing(
        tmp_path / "routing.yaml",
        experiment="shadowing",
        variants={"champion": 100},
        shadow="challenger",
    )
    srv = start_server(var, tmp_path / "serve.log", reload_interval_seconds=3600, routing=routing)
    headers = bearer("predict", "admin")
    users = [f"user-{i}" for i in range(30)]
    try:
        srv.wait_ready()  # ready with the champion: the shadow may still be loading

        def shadow_loaded() -> bool:
            models = httpx.get(f"{srv.url}/models", headers=headers).json()["models"]
            return any(m["alias"] == "challenger" for m in models)

        wait_for("the shadow's model", shadow_loaded)
        shadowed = [
            httpx.post(
                f"{srv.url}/predict", json={"text": "lovely crew", "user_id": u}, headers=headers
            ).json()
            for u in users
        ]

        def shadow_count() -> float:
            for line in httpx.get(f"{srv.url}/metrics").text.splitlines():
                if line.startswith("model_predictions_total{") and 'variant="challenger"' in line:
                    return float(line.rsplit(" ", 1)[1])
            return 0.0

        wait_for("the shadow's predictions", lambda: shadow_count() == len(users))
        split = RoutingConfig(experiment="ab", variants={"champion": 50, "challenger": 50})
        write_routing(routing, **split.model_dump())
        reload = httpx.post(f"{srv.url}/admin/reload", headers=headers, timeout=120).json()
        routed = [
            httpx.post(
                f"{srv.url}/predict", json={"text": "lovely crew", "user_id": u}, headers=headers
            ).json()
            for u in users
        ]
    finally:
        srv.stop()
    assert {(b["variant"], b["model_version"]) for b in shadowed} == {("champion", champion)}
    assert reload["routing"] == {"result": "applied", "experiment": "ab", "error": None}
    versions = {"champion": champion, "challenger": challenger}
    router = Router(split)
    assert [(b["variant"], b["model_version"]) for b in routed] == [
        (router.assign(u), versions[router.assign(u)]) for u in users
    ]
    applied = [r for r in srv.log_records() if r.get("msg") == "routing applied"]
    assert [r["experiment"] for r in applied] == ["shadowing", "ab"]
