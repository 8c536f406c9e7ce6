"""Every metric the dashboard and the rules read is one the real API exports.

The API is started twice, as it runs: with one worker, `/metrics` declares every family the
app has, also those with no sample yet; with two, it shows a family only once some worker
has recorded in it, and adds the parent's `server_worker_restarts_total`. A prediction, and
a feedback where the API takes them, are sent to each before its `/metrics` is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from sentiment_mlops.serving.launcher import ServerProcess

from .api import give_feedback, has_feedback, predict
from .monitoring import (
    ALERT_RULES,
    PROMETHEUS_OWN,
    RECORDING_RULES,
    dashboard,
    dashboard_queries,
    exported_names,
    metric_names,
    recorded_names,
    rules,
)


@pytest.fixture(scope="module")
def exported(start_api: Callable[[int], ServerProcess]) -> Iterator[set[str]]:
    apis = [start_api(1), start_api(2)]
    names: set[str] = set()
    try:
        for api in apis:
            api.wait_ready()
            answer = predict(api, "what a lovely flight")
            if has_feedback(api):
                give_feedback(api, answer["prediction_id"], answer["label"])
            response = httpx.get(f"{api.url}/metrics")
            assert response.status_code == 200, response.text
            names |= exported_names(response.text)
        yield names
    finally:
        for api in apis:
            api.stop()


def test_the_api_exports_its_metrics_under_the_names_the_tests_read(exported: set[str]) -> None:
    assert {
        "model_predictions_total",
        "http_request_duration_seconds_bucket",
        "model_info",
        "server_worker_restarts_total",
    } <= exported


def test_every_metric_the_dashboard_names_is_exported(exported: set[str]) -> None:
    missing = {
        f"{name} ({where})"
        for where, expr in dashboard_queries(dashboard())
        for name in metric_names(expr) - exported
    }
    assert missing == set()


def test_every_metric_the_rules_read_is_exported(exported: set[str]) -> None:
    """Recording-rule outputs and Prometheus's own `up` excepted."""
    known = exported | recorded_names() | PROMETHEUS_OWN
    missing = {
        f"{name} ({rule.get('record') or rule.get('alert')})"
        for rule in rules(RECORDING_RULES) + rules(ALERT_RULES)
        for name in metric_names(rule["expr"]) - known
    }
    assert missing == set()
