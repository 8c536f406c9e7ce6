"""The MLflow UI command points at the project's store and artifact folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentiment_mlops.config import ConfigError, Settings
from sentiment_mlops.ui import server_command


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_ui_reads_the_default_store_under_the_var_dir(tmp_path: Path, clean_env: None) -> None:
    command = server_command(Settings(var_dir=tmp_path), Path("/venv/bin/mlflow"), port=5123)

    assert command[:2] == ["/venv/bin/mlflow", "server"]
    assert option(command, "--backend-store-uri") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert option(command, "--default-artifact-root") == (tmp_path / "mlartifacts").as_uri()
    assert option(command, "--host") == "127.0.0.1"
    assert option(command, "--port") == "5123"


def test_ui_follows_mlflow_tracking_uri_and_artifact_root(
    tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql+psycopg2://u@db/mlflow")
    monkeypatch.setenv("SENTIMENT_ARTIFACT_ROOT", str(tmp_path / "artifacts"))

    command = server_command(Settings(), Path("mlflow"))

    assert option(command, "--backend-store-uri") == "postgresql+psycopg2://u@db/mlflow"
    assert option(command, "--default-artifact-root") == (tmp_path / "artifacts").as_uri()


def test_a_tracking_server_is_refused_with_a_hint(clean_env: None) -> None:
    settings = Settings(MLFLOW_TRACKING_URI="http://mlflow.internal:5000")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="has its own UI"):
        server_command(settings, Path("mlflow"))
