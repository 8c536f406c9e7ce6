"""/docs and /redoc load everything from the app itself (no CDN), from the installed assets."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sklearn.pipeline import Pipeline

from sentiment_mlops.config import Settings
from sentiment_mlops.serving.app import create_app
from sentiment_mlops.serving.docs import ASSETS

from ..fakes import FakeSource

SECRET = "docs-tests-secret-0123456789abcdef"
ASSET_REF = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']|url:\s*["']([^"']+)["']""")


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory, default_model: Pipeline) -> Iterator[TestClient]:
    settings = Settings(var_dir=tmp_path_factory.mktemp("docs"), jwt_secret=SECRET)
    with TestClient(
        create_app(settings, FakeSource({1: default_model}, {"champion": 1}))
    ) as client:
        yield client


def referenced_urls(html: str) -> list[str]:
    return [a or b for a, b in ASSET_REF.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_pages_reference_only_the_app_itself(http: TestClient, page: str) -> None:
    response = http.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = referenced_urls(response.text)
    assert urls, response.text
    assert all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    for url in urls:
        assert http.get(url).status_code == 200, url


def test_assets_are_served_from_the_installed_package(http: TestClient) -> None:
    for name, content_type in [
        ("swagger-ui-bundle.js", "javascript"),
        ("swagger-ui.css", "text/css"),
        ("redoc.standalone.js", "javascript"),
    ]:
        response = http.get(f"/docs/static/{name}")
        assert response.status_code == 200
        assert content_type in response.headers["content-type"]
        assert response.content == (ASSETS / name).read_bytes()


def test_oauth2_redirect_page_is_served(http: TestClient) -> None:
    response = http.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert "oauth2" in response.text.lower()


def test_docs_pages_are_not_operations_in_the_schema(http: TestClient) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert "/predict" in paths
    assert "/token" in paths
    assert not any(p.startswith(("/docs", "/redoc")) for p in paths)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_pages_may_only_load_from_this_server(http: TestClient, page: str) -> None:
    policy = http.get(page).headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "http" not in policy


def test_the_schema_says_what_metrics_and_batches_really_are(http: TestClient) -> None:
    """/metrics answers Prometheus text (a 503 is JSON), and no text of a batch may be empty:
    a client generated from the schema, or a fuzzer, reads these."""
    schema = http.get("/openapi.json").json()
    metrics = schema["paths"]["/metrics"]["get"]["responses"]
    assert list(metrics["200"]["content"]) == ["text/plain"]
    assert list(metrics["503"]["content"]) == ["application/json"]
    texts = schema["components"]["schemas"]["BatchPredictRequest"]["properties"]["texts"]
    assert texts["items"] == {"type": "string", "minLength": 1}
