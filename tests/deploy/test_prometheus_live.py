"""A real Prometheus (Debian's) scraping the real API: deploy/prometheus/prometheus.yml with
the API's address on 127.0.0.1 and one-second intervals, the project's rules loaded, and the
dashboard's queries run against what it scraped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sentiment_mlops.serving.launcher import ServerProcess

from ..integration.server import wait_for
from .api import give_feedback, predict
from .monitoring import (
    ALERT_RULES,
    JOB,
    RECORDING_RULES,
    PrometheusServer,
    dashboard,
    dashboard_queries,
    recorded_names,
    rules,
    scrape_config,
)

PREDICTIONS = 25
# Panels with nothing to show when every request succeeded and nothing was dropped.
NOTHING_HAPPENED = {
    "panel '4xx and 5xx per second, by route and status'",
    "panel 'Prediction log rows dropped, by reason'",
}


def test_prometheus_counts_every_prediction_and_evaluates_every_rule(
    start_api: Callable[[int], ServerProcess], tmp_path: Path
) -> None:
    """Two workers: Prometheus reads the counts summed over them, exactly. Every dashboard
    panel shows data but those about failures (one feedback is sent for the feedback panels)."""
    api = start_api(2)
    prometheus = PrometheusServer(scrape_config(f"127.0.0.1:{api.port}", tmp_path), tmp_path)
    try:
        api.wait_ready()
        answers = [predict(api, f"the crew were lovely {i}") for i in range(PREDICTIONS)]
        give_feedback(api, answers[0]["prediction_id"], answers[0]["label"])

        def total() -> float | None:
            result = prometheus.query("sum(model_predictions_total)")
            return float(result[0]["value"][1]) if result else None

        wait_for(
            f"sum(model_predictions_total) == {PREDICTIONS} in Prometheus",
            lambda: total() == PREDICTIONS,
        )
        # rate() needs two samples of a series; the feedback's appeared last.
        wait_for(
            "two samples of the feedback's series",
            lambda: prometheus.query("count_over_time(model_feedback_total[1m]) >= 2"),
        )
        labels = {str(a["label"]) for a in answers}
        recorded = wait_for(
            "the recording rules over the API's predictions",
            lambda: prometheus.query(
                'variant_model_version_label:model_predictions:rate5m{variant="champion"}'
            ),
        )

        def evaluated() -> list[dict[str, Any]] | None:
            data = prometheus.get("/api/v1/rules")
            found = [r for g in data["groups"] for r in g["rules"]] if data else []
            return found if found and all(r["health"] != "unknown" for r in found) else None

        loaded = wait_for("every rule evaluated", evaluated)
        dashboard_results = {
            where: prometheus.query(expr) for where, expr in dashboard_queries(dashboard())
        }
        up = prometheus.query(f'up{{job="{JOB}"}}')
        firing = prometheus.query('ALERTS{alertstate="firing"}')
    finally:
        prometheus.stop()
        api.stop()

    assert {r["metric"]["label"] for r in recorded} == labels
    assert {r["metric"]["model_version"] for r in recorded} == {"1"}
    assert {r["name"]: r.get("lastError") for r in loaded if r["health"] != "ok"} == {}
    names = {r["name"] for r in loaded}
    assert names == recorded_names() | {r["alert"] for r in rules(ALERT_RULES) if "alert" in r}
    assert len(loaded) == len(rules(RECORDING_RULES)) + len(rules(ALERT_RULES))
    assert up is not None and [float(r["value"][1]) for r in up] == [1.0]
    assert firing == []
    assert [where for where, result in dashboard_results.items() if result is None] == []
    shown = {where.split(" target ")[0] for where, result in dashboard_results.items() if result}
    empty = {where.split(" target ")[0] for where in dashboard_results} - shown
    assert empty <= NOTHING_HAPPENED
