"""How `sentiment serve` runs uvicorn (the process itself is tested in tests/integration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sentiment_mlops.config import Settings
from sentiment_mlops.serving import server


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
