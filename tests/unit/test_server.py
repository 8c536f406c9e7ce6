"""How `sentiment serve` runs uvicorn (the process itself is tested in tests/integration)."""

from __future__ import annotations

import os
import re
import threading
from http.client import HTTPConnection
from pathlib import Path

import pytest
import uvicorn
from pydantic import SecretStr
from starlette.types import Receive, Scope, Send

from sentiment_mlops.config import Settings
from sentiment_mlops.serving import server
from sentiment_mlops.serving.connections import ConnectionLimits
from sentiment_mlops.serving.launcher import HOST, free_port
from sentiment_mlops.serving.metrics import MULTIPROC_ENV
from sentiment_mlops.serving.tokens import Authenticator


def test_uvicorn_builds_the_app_through_the_factory_with_a_patient_worker_healthcheck(
    tmp_path: Path, clean_env: None
) -> None:
    """Under CPU load a spawned worker took longer than uvicorn's default 5 s to answer its
    first ping, and the parent killed and respawned workers in a loop for minutes."""
    settings = Settings(var_dir=tmp_path, workers=2, keep_alive_seconds=7)
    limits = ConnectionLimits(header_timeout=3.0, max_connections=100)
    config = server.build_config(settings, limits)
    assert config.app == "sentiment_mlops.serving.app:create_app" and config.factory
    assert config.workers == 2
    assert config.timeout_worker_healthcheck == 60
    assert Settings.model_fields["worker_healthcheck_seconds"].default >= 30
    assert config.http == "sentiment_mlops.serving.connections:GuardedHttpToolsProtocol"
    assert config.limits == limits and config.timeout_keep_alive == 7


def test_a_configured_metrics_folder_is_emptied_of_a_previous_run_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    """A container restarted in the same pod finds its predecessor's files there."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "gauge_livemax_12345.db").write_bytes(b"stale")
    (folder / "notes.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_ENV, str(folder))
    with server.metrics_folder(Settings(var_dir=tmp_path, workers=2)) as shared:
        assert shared == folder and os.environ[MULTIPROC_ENV] == str(folder)
        assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert folder.is_dir()


def test_several_workers_share_a_folder_of_their_own_removed_on_exit(
    tmp_path: Path, clean_env: None
) -> None:
    with server.metrics_folder(Settings(var_dir=tmp_path, workers=2)) as shared:
        assert shared is not None and shared.is_dir()
        assert os.environ[MULTIPROC_ENV] == str(shared)
        if server.MEMORY_FOLDER.is_dir():
            assert shared.parent == server.MEMORY_FOLDER
    assert not shared.exists() and MULTIPROC_ENV not in os.environ


def test_one_worker_keeps_its_metrics_in_memory(tmp_path: Path, clean_env: None) -> None:
    with server.metrics_folder(Settings(var_dir=tmp_path, workers=1)) as shared:
        assert shared is None and MULTIPROC_ENV not in os.environ


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


def test_one_worker_runs_asyncio_s_loop_and_several_run_uvloop(
    tmp_path: Path, clean_env: None
) -> None:
    limits = ConnectionLimits(header_timeout=3.0, max_connections=100)
    loops = {
        workers: server.build_config(Settings(var_dir=tmp_path, workers=workers), limits).loop
        for workers in (1, 2)
    }
    assert loops == {1: "asyncio", 2: "uvloop"}


class ConnectionCounter:
    """An ASGI app: `GET /block` blocks the event loop until `release` is set; any other
    request is answered with the number of connections the server holds at that moment."""

    def __init__(self) -> None:
        self.server: uvicorn.Server | None = None
        self.blocked = threading.Event()
        self.release = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/block":
            self.blocked.set()
            self.release.wait(timeout=60)  # blocks the loop on purpose: nothing else runs
            body = b"released"
        else:
            assert self.server is not None
            body = str(len(self.server.server_state.connections)).encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def test_one_busy_worker_accepts_a_burst_of_connections_at_once(
    tmp_path: Path, clean_env: None
) -> None:
    """Connections that arrive while the loop is busy are all accepted in its next turn, so
    none of them waits for the others' requests to be answered first. uvloop accepts one
    connection per turn: under load the last of 64 new connections waited 1.5-2.2 s."""
    app = ConnectionCounter()
    settings = Settings(var_dir=tmp_path, port=free_port(), workers=1)
    config = uvicorn.Config(app, **server.uvicorn_options(settings))
    app.server = uvicorn.Server(config)
    serving = threading.Thread(target=app.server.run, daemon=True)
    serving.start()
    started = threading.Event()
    while not app.server.started and serving.is_alive():
        started.wait(0.05)
    holder = HTTPConnection(HOST, settings.port, timeout=60)
    burst = [HTTPConnection(HOST, settings.port, timeout=60) for _ in range(8)]
    try:
        holder.request("GET", "/block")
        assert app.blocked.wait(timeout=60), "the blocking request never arrived"
        for connection in burst:  # connected and sent while the loop is blocked
            connection.request("GET", "/connections")
        app.release.set()
        assert holder.getresponse().read() == b"released"
        seen = [int(connection.getresponse().read()) for connection in burst]
    finally:
        app.release.set()
        for connection in [holder, *burst]:
            connection.close()
        app.server.should_exit = True
        serving.join(timeout=60)
    assert seen == [1 + len(burst)] * len(burst), "every connection open before any answer"
