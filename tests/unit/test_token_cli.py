"""`sentiment token create` and `sentiment token add-client`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentiment_mlops.cli import app
from sentiment_mlops.config import Settings
from sentiment_mlops.serving.clients import ClientStore
from sentiment_mlops.serving.tokens import Authenticator

runner = CliRunner()


@pytest.fixture
def var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None) -> Path:
    monkeypatch.setenv("SENTIMENT_VAR_DIR", str(tmp_path / "var"))
    return tmp_path / "var"


def test_token_create_mints_a_token_the_server_accepts(var: Path) -> None:
    result = runner.invoke(
        app, ["token", "create", "--subject", "app", "--scopes", "predict,admin"]
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    principal = Authenticator.from_settings(Settings(var_dir=var)).verify(token)
    assert principal.subject == "app" and principal.scopes == {"predict", "admin"}
    assert (var / "dev_jwt_secret").is_file()


def test_token_create_rejects_unknown_scopes(var: Path) -> None:
    result = runner.invoke(app, ["token", "create", "--subject", "app", "--scopes", "root"])
    assert result.exit_code == 1
    assert "unknown scope" in result.output


def test_add_client_prints_a_secret_stored_only_hashed(var: Path) -> None:
    result = runner.invoke(app, ["token", "add-client", "nightly", "--scopes", "predict"])
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip().splitlines()[-1]
    path = Settings(var_dir=var).clients_file()
    assert secret not in path.read_text()
    assert ClientStore.load(path).authenticate("nightly", secret) == {"predict"}


def test_token_create_refuses_an_absurd_ttl_in_one_line(var: Path) -> None:
    result = runner.invoke(app, ["token", "create", "--subject", "app", "--ttl", "1000000000000"])
    assert result.exit_code == 1
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ttl_seconds 1000000000000 exceeds the maximum of 31622400")
