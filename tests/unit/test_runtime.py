"""The process environment is set at the entry points, with the user's values kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sentiment_mlops
from sentiment_mlops.cli import app
from sentiment_mlops.config import Settings
from sentiment_mlops.runtime import (
    PROCESS_ENV,
    Terminated,
    configure_process,
    restored_environment,
    sigterm_raises,
)
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


def test_a_cli_process_exits_without_collecting_cycles(tmp_path: Path) -> None:
    """The shutdown collections are skipped (they took ~1.3 s after training)."""
    code = (
        "import gc, os, sys\n"
        "gc.disable()  # the cycle must survive the command, to be left for the shutdown\n"
        "from sentiment_mlops.cli import app\n"
        "class Cycle:\n"
        "    def __del__(self): os.write(1, b'collected')\n"
        "cycle = Cycle(); cycle.me = cycle; del cycle\n"
        "sys.argv = ['sentiment', *sys.argv[1:]]\n"
        "app()\n"
    )
    runs = {
        args: subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(sentiment_mlops.__file__).parents[1])},
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
        for args in [("--help",), ("datasets", "fetch", "no-such-dataset")]
    }
    help_run, command_run = runs.values()
    assert help_run.returncode == 0 and "collected" in help_run.stdout  # --help: no callback
    assert command_run.returncode == 1
    assert "collected" not in command_run.stdout


def test_restored_environment_puts_back_set_and_unset_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENTIMENT_TEST_KEPT", "before")
    monkeypatch.delenv("SENTIMENT_TEST_UNSET", raising=False)
    with (
        pytest.raises(RuntimeError),
        restored_environment("SENTIMENT_TEST_KEPT", "SENTIMENT_TEST_UNSET"),
    ):
        os.environ["SENTIMENT_TEST_KEPT"] = "changed"
        os.environ["SENTIMENT_TEST_UNSET"] = "set by a library"
        raise RuntimeError("the block failing restores them too")
    assert os.environ["SENTIMENT_TEST_KEPT"] == "before"
    assert "SENTIMENT_TEST_UNSET" not in os.environ


def test_sigterm_unwinds_the_block_and_restores_the_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = signal.getsignal(signal.SIGTERM)
    with (
        pytest.raises(Terminated) as ended,
        sigterm_raises(),
        tempfile.TemporaryDirectory() as folder,
    ):
        (Path(folder) / "report.json").write_text("{}")
        signal.raise_signal(signal.SIGTERM)
    assert ended.value.code == 143
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before
