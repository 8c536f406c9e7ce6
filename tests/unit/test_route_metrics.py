"""`http_requests_total` is labelled by route template for every route the app serves (API,
OpenAPI schema, docs pages, their static files) and `unmatched` for anything else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.pipeline import Pipeline

from sentiment_mlops.config import Settings
from sentiment_mlops.serving.app import create_app
from sentiment_mlops.serving.metrics import UNAVAILABLE_ENV

from ..fakes import FakeSource

SECRET = "route-metrics-secret-0123456789abcdef"


@pytest.fixture
def http(tmp_path: Path, default_model: Pipeline) -> Iterator[TestClient]:
    app = create_app(
        Settings(var_dir=tmp_path, jwt_secret=SECRET),
        FakeSource({1: default_model}, {"champion": 1}),
    )
    with TestClient(app) as client:
        yield client


def requests_total(http: TestClient) -> dict[tuple[str, str, str], float]:
    text = http.get("/metrics").text
    return {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "http_requests"
        for s in family.samples
        if s.name == "http_requests_total"
    }


def test_docs_schema_and_static_files_are_counted_by_template(http: TestClient) -> None:
    for path in (
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/docs/static/swagger-ui.css",
        "/docs/static/redoc.standalone.js",
        "/health",
    ):
        assert http.get(path).status_code == 200, path
    assert http.get("/docs/static/no-such-file.js").status_code == 404

    counts = requests_total(http)

    assert counts[("GET", "/openapi.json", "200")] == 1
    assert counts[("GET", "/docs", "200")] == 1
    assert counts[("GET", "/docs/oauth2-redirect", "200")] == 1
    assert counts[("GET", "/redoc", "200")] == 1
    assert counts[("GET", "/docs/static/{path}", "200")] == 2
    assert counts[("GET", "/docs/static/{path}", "404")] == 1
    assert counts[("GET", "/health", "200")] == 1
    assert not any(route == "unmatched" for _, route, _ in counts)


def test_unknown_paths_stay_unmatched(http: TestClient) -> None:
    for path in ("/nope", "/docs/", "/docs/nope", "/static/swagger-ui.css", "/openapi.json/x"):
        assert http.get(path, follow_redirects=False).status_code in {307, 404}, path

    counts = requests_total(http)

    routes = {route for _, route, _ in counts}
    assert routes == {"unmatched"}
    assert sum(counts.values()) == 5


def test_wrong_method_on_a_known_path_is_counted_under_its_template(http: TestClient) -> None:
    assert http.post("/openapi.json").status_code == 405
    assert http.post("/health").status_code == 405

    counts = requests_total(http)

    assert counts[("POST", "/openapi.json", "405")] == 1
    assert counts[("POST", "/health", "405")] == 1


def test_templates_hold_behind_a_path_prefix(tmp_path: Path, default_model: Pipeline) -> None:
    """Behind a proxy that forwards `/api/...` with root_path `/api` (uvicorn --root-path keeps
    the prefix in the path), the pages link under the prefix and the labels do not change."""
    app = create_app(
        Settings(var_dir=tmp_path, jwt_secret=SECRET),
        FakeSource({1: default_model}, {"champion": 1}),
    )
    with TestClient(app, root_path="/api") as http:
        page = http.get("/api/docs")
        assert page.status_code == 200
        assert "/api/docs/static/swagger-ui-bundle.js" in page.text
        assert "/api/openapi.json" in page.text
        assert http.get("/api/docs/static/swagger-ui-bundle.js").status_code == 200
        assert http.get("/api/openapi.json").status_code == 200
        assert http.get("/api/nope").status_code == 404

        counts = requests_total(http)

    assert counts[("GET", "/docs", "200")] == 1
    assert counts[("GET", "/docs/static/{path}", "200")] == 1
    assert counts[("GET", "/openapi.json", "200")] == 1
    assert counts[("GET", "unmatched", "404")] == 1


def test_metrics_without_room_for_their_files_answer_503_with_the_reason(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the parent tells workers when the shared metrics folder has no room."""
    monkeypatch.setenv(UNAVAILABLE_ENV, "/dev/shm/x has 0 bytes free; 2 worker(s) need 3145728")
    response = http.get("/metrics")
    assert response.status_code == 503
    assert response.json()["detail"] == (
        "metrics unavailable: /dev/shm/x has 0 bytes free; 2 worker(s) need 3145728"
    )
    assert http.get("/health").status_code == 200
