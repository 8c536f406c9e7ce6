"""How `sentiment serve` runs uvicorn (the process itself is tested in tests/integration)."""

from __future__ import annotations

import threading
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from sentiment_mlops.config import Settings
from sentiment_mlops.serving import server
from sentiment_mlops.serving.launcher import HOST, free_port


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


def test_one_worker_runs_asyncio_s_loop_and_several_run_uvloop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    loops = {}
    for workers in (1, 2):
        monkeypatch.setattr(
            server.uvicorn, "run", lambda *a, **kw: loops.update({kw["workers"]: kw["loop"]})
        )
        server.run_server(Settings(var_dir=tmp_path, workers=workers))
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
