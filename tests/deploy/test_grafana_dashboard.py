"""deploy/grafana: provisioning points at the compose stack's Prometheus and the dashboards
folder; the dashboard's panels are laid out and every query in it is PromQL promtool accepts."""

from __future__ import annotations

from pathlib import Path

import yaml

from .monitoring import (
    DASHBOARD,
    GRAFANA_DIR,
    dashboard,
    dashboard_queries,
    load_yaml,
    metric_names,
    panels,
    promtool,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What the dashboard must show (the issue): traffic and latency by variant and model version,
# errors, label share, confidence, feedback accuracy by variant, the log's queue and drops.
SHOWN = {
    "model_inference_duration_seconds_count",
    "model_inference_duration_seconds_bucket",
    "http_request_duration_seconds_bucket",
    "http_requests_total",
    "model_predictions_total",
    "model_prediction_confidence_sum",
    "model_prediction_confidence_count",
    "model_feedback_total",
    "prediction_log_queue_depth",
    "prediction_log_dropped_total",
}


def test_provisioning_points_at_prometheus_and_loads_the_dashboards_folder() -> None:
    provisioning = GRAFANA_DIR / "provisioning"
    (source,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert (source["type"], source["url"], source["access"]) == (
        "prometheus",
        "http://prometheus:9090",
        "proxy",
    )
    assert source["isDefault"] is True
    (provider,) = load_yaml(provisioning / "dashboards" / "sentiment.yml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert [p.name for p in DASHBOARD.parent.iterdir()] == ["sentiment.json"]


def test_the_dashboard_panels_have_ids_a_datasource_and_a_place_of_their_own() -> None:
    board = dashboard()
    assert board["uid"] == "sentiment-api"
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    taken: set[tuple[int, int]] = set()
    for panel in panels(board):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(pos["y"] + dy, pos["x"] + dx) for dy in range(pos["h"]) for dx in range(pos["w"])}
        assert not cells & taken, f"{panel['title']!r} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    names = {v["name"] for v in board["templating"]["list"]}
    assert names == {"datasource", "job", "variant", "model_version"}


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each query (Grafana's variables replaced by values) becomes a recording rule that
    `promtool check rules` parses."""
    queries = dashboard_queries(dashboard())
    group = {
        "name": "dashboard",
        "rules": [
            {"record": f"dashboard:query_{i}", "expr": e} for i, (_, e) in enumerate(queries)
        ],
    }
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}), encoding="utf-8")
    where = "\n".join(f"dashboard:query_{i}: {w}" for i, (w, _) in enumerate(queries))
    output = promtool("check", "rules", path)
    assert f"SUCCESS: {len(queries)} rules found" in output, f"{output}\n{where}"


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    named = set().union(*(metric_names(expr) for _, expr in dashboard_queries(dashboard())))
    assert SHOWN - named == set()
