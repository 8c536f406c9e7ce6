"""Headless Chromium driven by Playwright, for tests that check what a person would see.

Debian's `chromium` is used (never a browser downloaded by `playwright install`); `.ci/run`
installs it. Every request to a host other than this machine is refused and recorded, so a
test can assert that a page needs nothing from the internet.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, Route

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A name the browser alone resolves to 127.0.0.1: web UIs treat "localhost" and "127.0.0.1"
# specially (Swagger UI skips its online validator there), so pages are opened under this one.
LOCAL_NAME = "sentiment.test"
LOCAL_HOSTS = frozenset({LOCAL_NAME, "127.0.0.1", "localhost", "::1"})


def launch(playwright: Playwright, user_data_dir: Path) -> BrowserContext:
    """A fresh headless Chromium; skips the test when Debian's chromium is not installed."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install chromium (.ci/run does)")
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=str(CHROMIUM),
        headless=True,
        args=[*FLAGS, f"--host-resolver-rules=MAP {LOCAL_NAME} 127.0.0.1"],
        viewport={"width": 1280, "height": 900},
    )


def refuse_offsite(page: Page) -> list[str]:
    """Abort every request of `page` that would leave this machine; returns the list of their
    URLs, which keeps growing as the page makes more."""
    attempted: list[str] = []

    def handle(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            attempted.append(url)
            route.abort("blockedbyclient")

    page.route("**/*", handle)
    return attempted
