"""The process environment is set at the entry points, with the user's values kept."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from sentiment_mlops.cli import app
from sentiment_mlops.config import Settings
from sentiment_mlops.runtime import PROCESS_ENV, configure_process
from sentiment_mlops.serving.server import prepare_environment


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """None of the variables set; monkeypatch restores the suite's own values afterwards."""
    for name in PROCESS_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def configured() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in PROCESS_ENV}


def test_defaults_are_set_and_the_users_values_kept(bare_env: pytest.MonkeyPatch) -> None:
    bare_env.setenv("OPENBLAS_NUM_THREADS", "4")
    configure_process()
    configure_process()
    assert configured() == {**PROCESS_ENV, "OPENBLAS_NUM_THREADS": "4"}


def test_every_cli_command_configures_the_process(bare_env: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["datasets", "fetch", "no-such-dataset"])
    assert result.exit_code == 1
    assert configured() == PROCESS_ENV


def test_the_server_configures_the_process_its_workers_inherit(
    bare_env: pytest.MonkeyPatch,
) -> None:
    prepare_environment(Settings(workers=1))
    assert configured() == PROCESS_ENV
