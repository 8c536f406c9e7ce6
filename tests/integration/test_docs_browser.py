"""/docs and /redoc render their operations in a real browser with no internet access."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import BrowserContext, Page
from sklearn.pipeline import Pipeline

from sentiment_mlops.config import Settings
from sentiment_mlops.serving.app import create_app
from sentiment_mlops.serving.launcher import free_port

from ..browser import LOCAL_NAME, refuse_offsite
from ..fakes import FakeSource

SECRET = "docs-browser-secret-0123456789abcdef"
OPERATIONS = {
    "POST /predict",
    "POST /predict/batch",
    "POST /feedback",
    "GET /models",
    "POST /admin/reload",
    "GET /health",
    "GET /ready",
    "GET /metrics",
    "POST /token",
}
# Collects what a Content-Security-Policy stopped before it became a request.
RECORD_CSP_VIOLATIONS = """
window.cspBlocked = [];
document.addEventListener("securitypolicyviolation", e => window.cspBlocked.push(e.blockedURI));
"""
# ReDoc's bundle links its "API docs by Redocly" logo to Redocly's CDN; the page's CSP stops it.
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, default_model: Pipeline) -> Iterator[str]:
    """The real app on a loopback port (uvicorn in a thread), serving a small in-memory model."""
    settings = Settings(var_dir=tmp_path_factory.mktemp("docs-browser"), jwt_secret=SECRET)
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, FakeSource({1: default_model}, {"champion": 1})),
        host="127.0.0.1",
        port=port,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://{LOCAL_NAME}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def open_offline(browser: BrowserContext, url: str) -> tuple[Page, list[str]]:
    page = browser.new_page()
    offsite = refuse_offsite(page)
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    page.goto(url)
    assert offsite == [], "the page asked for files from outside this machine"
    return page, offsite


def test_swagger_ui_renders_the_operations_offline(
    browser: BrowserContext, base_url: str, tmp_path: Path
) -> None:
    page, offsite = open_offline(browser, f"{base_url}/docs")
    page.wait_for_selector(".opblock .opblock-summary-path", timeout=30_000)
    page.screenshot(path=tmp_path / "docs.png", full_page=True)

    shown = set(
        page.eval_on_selector_all(
            ".opblock-summary",
            """blocks => blocks.map(b =>
                b.querySelector(".opblock-summary-method").textContent.trim() + " " +
                b.querySelector(".opblock-summary-path").dataset.path)""",
        )
    )
    assert shown == OPERATIONS, f"see {tmp_path / 'docs.png'}"
    assert page.locator(".information-container .title").inner_text().startswith("sentiment-mlops")
    assert offsite == []
    assert page.evaluate("window.cspBlocked") == []
    page.close()


def test_redoc_renders_the_operations_offline(
    browser: BrowserContext, base_url: str, tmp_path: Path
) -> None:
    page, offsite = open_offline(browser, f"{base_url}/redoc")
    page.wait_for_selector('[data-section-id^="operation/"] .http-verb', timeout=30_000)
    page.screenshot(path=tmp_path / "redoc.png")

    shown = set(
        page.eval_on_selector_all(
            '[data-section-id^="operation/"] .http-verb',
            """verbs => verbs.map(v =>
                v.textContent.trim().toUpperCase() + " " +
                v.nextElementSibling.textContent.trim())""",
        )
    )
    assert shown == OPERATIONS, f"see {tmp_path / 'redoc.png'}"
    assert offsite == []
    assert set(page.evaluate("window.cspBlocked")) <= {REDOCLY_LOGO}
    page.close()
