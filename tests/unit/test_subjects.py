"""The subject key (`subjects.subject_key`): the configured one, else one generated once,
owner-only, and the same for every thread and process that asks for it; too short refused
without showing it."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from sentiment_mlops.cli import app
from sentiment_mlops.config import ConfigError, Settings
from sentiment_mlops.subjects import subject_hash, subject_key

from ..prediction_events import keyed_hash


def test_the_configured_key_is_used_and_nothing_is_generated(
    tmp_path: Path, clean_env: None
) -> None:
    configured = "k" * 32
    settings = Settings(var_dir=tmp_path / "var", subject_key=SecretStr(configured))
    assert subject_key(settings) == configured.encode()
    assert subject_hash("misc", subject_key(settings)) == keyed_hash("misc", configured.encode())
    assert not (tmp_path / "var").exists()


def test_a_short_key_is_refused_naming_the_setting_not_the_key(
    tmp_path: Path, clean_env: None
) -> None:
    short = "short-subject-key-31-bytes-long"
    settings = Settings(var_dir=tmp_path, subject_key=SecretStr(short))
    with pytest.raises(ConfigError, match="SENTIMENT_SUBJECT_KEY is 31 bytes") as caught:
        subject_key(settings)
    assert short not in str(caught.value) and short not in repr(settings)


def test_serve_refuses_a_short_key_in_one_line_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    short = "short-subject-key-31-bytes-long"
    monkeypatch.setenv("SENTIMENT_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SENTIMENT_SUBJECT_KEY", short)
    started: list[Settings] = []
    monkeypatch.setattr("sentiment_mlops.serving.server.run_server", started.append)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 1 and started == []
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: SENTIMENT_SUBJECT_KEY is 31 bytes; the subject key needs")
    assert short not in result.output


def test_the_generated_key_is_made_once_private_and_reused(tmp_path: Path, clean_env: None) -> None:
    settings = Settings(var_dir=tmp_path / "nested" / "var")
    first = subject_key(settings)
    path = settings.subject_key_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 64
    assert subject_key(settings) == first == path.read_text().strip().encode()
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_an_unwritable_key_location_is_a_config_error(tmp_path: Path, clean_env: None) -> None:
    (tmp_path / "not-a-dir").write_text("")
    with pytest.raises(ConfigError, match="set SENTIMENT_SUBJECT_KEY"):
        subject_key(Settings(var_dir=tmp_path / "not-a-dir"))


def test_racing_threads_share_one_generated_key(tmp_path: Path, clean_env: None) -> None:
    settings = Settings(var_dir=tmp_path)
    barrier = threading.Barrier(8)
    keys: list[bytes] = []

    def resolve() -> None:
        barrier.wait()
        keys.append(subject_key(settings))

    threads = [threading.Thread(target=resolve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8
    assert set(keys) == {settings.subject_key_file().read_text().strip().encode()}


_RACE = """
import hashlib, sys, time
from pathlib import Path
from sentiment_mlops.config import Settings
from sentiment_mlops.subjects import subject_key
go = Path(sys.argv[1]) / "go"
while not go.exists():
    time.sleep(0.001)
print(hashlib.sha256(subject_key(Settings(var_dir=Path(sys.argv[1]) / "var"))).hexdigest())
"""


def test_racing_processes_share_one_generated_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    time.sleep(0.5)
    (tmp_path / "go").touch()
    digests = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    expected = hashlib.sha256((tmp_path / "var" / "subject_key").read_text().strip().encode())
    assert digests == {expected.hexdigest()}
