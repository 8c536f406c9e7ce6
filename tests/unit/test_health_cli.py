"""`sentiment health`: the container's HEALTHCHECK, asking the local server without curl."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from sentiment_mlops.cli import app

runner = CliRunner()


class _Answers(BaseHTTPRequestHandler):
    """/health 200; /ready 503 with a reason, like a server still loading its model."""

    def do_GET(self) -> None:
        status, body = (200, b'{"status": "ok"}')
        if self.path == "/ready":
            status, body = (503, b'{"status": "loading version 3"}')
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch, clean_env: None) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    monkeypatch.setenv("SENTIMENT_HOST", "0.0.0.0")  # as in the image: asked on loopback
    monkeypatch.setenv("SENTIMENT_PORT", str(port))
    yield port
    server.shutdown()
    server.server_close()


def test_health_exits_0_when_the_server_answers_200(port: int) -> None:
    result = runner.invoke(app, ["health"])
    assert result.exit_code == 0, result.output
    assert f"http://127.0.0.1:{port}/health: 200" in result.output


def test_health_ready_exits_1_and_says_why(port: int) -> None:
    result = runner.invoke(app, ["health", "--ready"])
    assert result.exit_code == 1
    assert "/ready: status 503: " in result.output
    assert "loading version 3" in result.output


def test_health_exits_1_when_nothing_listens(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTIMENT_PORT", "1")
    result = runner.invoke(app, ["health", "--timeout", "1"])
    assert result.exit_code == 1
    assert "unhealthy" in result.output and "refused" in result.output.lower()
