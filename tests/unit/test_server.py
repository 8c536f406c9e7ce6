"""How `sentiment serve` runs uvicorn (the process itself is tested in tests/integration)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from sentiment_mlops.config import Settings
from sentiment_mlops.serving import server
from sentiment_mlops.serving.tokens import Authenticator


def test_uvicorn_builds_the_app_through_the_factory_with_a_patient_worker_healthcheck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    """Under CPU load a spawned worker took longer than uvicorn's default 5 s to answer its
    first ping, and the parent killed and respawned workers in a loop for minutes."""
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(server.uvicorn, "run", lambda *a, **kw: calls.append((a, kw)))
    server.run_server(Settings(var_dir=tmp_path, workers=2))
    ((args, kwargs),) = calls
    assert args == ("sentiment_mlops.serving.app:create_app",) and kwargs["factory"] is True
    assert kwargs["workers"] == 2
    assert kwargs["timeout_worker_healthcheck"] == 60
    assert Settings.model_fields["worker_healthcheck_seconds"].default >= 30


def _printed_token(hint: str) -> str | None:
    found = re.search(r"Bearer (ey[\w.-]+)", hint)
    return found.group(1) if found else None


def test_usage_hint_prints_a_working_token_only_for_the_development_secret(
    tmp_path: Path, clean_env: None
) -> None:
    settings = Settings(var_dir=tmp_path)
    hint = server.usage_hint(settings)
    token = _printed_token(hint)
    assert token is not None, hint
    assert Authenticator.from_settings(settings).verify(token).scopes == {"predict"}
    assert "development secret" in hint


def test_usage_hint_prints_no_token_when_a_real_key_is_configured(
    tmp_path: Path, clean_env: None, rsa_pem: tuple[str, str]
) -> None:
    """Every `sentiment serve` printed a working 60-minute token to stderr, real key or not."""
    configured = [
        Settings(var_dir=tmp_path, jwt_secret=SecretStr("k" * 48)),
        Settings(var_dir=tmp_path, jwt_algorithm="RS256", jwt_private_key=SecretStr(rsa_pem[0])),
    ]
    for settings in configured:
        hint = server.usage_hint(settings)
        assert _printed_token(hint) is None, hint
        assert "a real signing key is configured" in hint.lower()
        assert "sentiment token create" in hint
        assert "Bearer <token>" in hint
    assert not (tmp_path / "dev_jwt_secret").exists()
