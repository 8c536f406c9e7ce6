"""`make ui`: the MLflow UI (full mlflow, from .venv-ui) over a store the project trained into
shows the registered model, its champion alias and the run's report and plots.

Marked `ui`, so the default run skips it: `make test-ui` builds .venv-ui and runs it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from sentiment_mlops.config import Settings
from sentiment_mlops.serving.launcher import free_port, server_env
from sentiment_mlops.ui import server_command

from ..browser import refuse_offsite
from .server import train_into

pytestmark = pytest.mark.ui

ROOT = Path(__file__).resolve().parents[2]
MLFLOW = Path(os.environ.get("SENTIMENT_TEST_MLFLOW", ROOT / ".venv-ui" / "bin" / "mlflow"))
PLOTS = ["confusion_matrix.png", "roc.png", "reliability.png"]


@pytest.fixture(scope="module")
def ui_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Train once into a fresh store, then start the MLflow UI over it on a loopback port."""
    if not MLFLOW.exists():
        pytest.skip(f"{MLFLOW} not found: `make test-ui` builds the UI environment")
    var = tmp_path_factory.mktemp("ui") / "var"
    train_into(var)
    port = free_port()
    log_path = var / "mlflow-ui.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            server_command(Settings(var_dir=var), MLFLOW, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_env(var) | {"MLFLOW_DISABLE_TELEMETRY": "true"},
            start_new_session=True,  # its worker processes stop with it
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"MLflow UI did not start: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    page = browser.new_page()
    page.set_default_timeout(60_000)
    offsite = refuse_offsite(page)
    yield page
    page.close()
    assert offsite == [], "the MLflow UI asked for files from outside this machine"


def test_registered_model_and_its_champion_alias_are_shown(
    page: Page, ui_url: str, tmp_path: Path
) -> None:
    page.goto(f"{ui_url}/#/models")
    page.get_by_role("link", name="sentiment", exact=True).first.wait_for()

    page.goto(f"{ui_url}/#/models/sentiment")
    version = page.get_by_role("row").filter(has=page.get_by_role("link", name="Version 1"))
    expect(version).to_contain_text(re.compile(r"@\s*champion"), timeout=60_000)
    page.screenshot(path=tmp_path / "model.png")


def test_the_run_shows_its_report_and_plots(page: Page, ui_url: str, tmp_path: Path) -> None:
    page.goto(f"{ui_url}/#/models/sentiment/versions/1")
    page.locator("a[href*='/runs/']").first.click()  # the version's source run
    page.get_by_role("tab", name="Artifacts").click()
    for name in ["report.json", *PLOTS]:
        page.get_by_text(name, exact=True).first.wait_for()

    page.get_by_text("confusion_matrix.png", exact=True).first.click()
    image = page.locator("img[src^='blob:']").first
    image.wait_for()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
    )
    page.screenshot(path=tmp_path / "artifacts.png")
    assert image.evaluate("img => img.naturalWidth") > 100, f"see {tmp_path / 'artifacts.png'}"
