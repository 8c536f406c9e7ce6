"""The connection limits uvicorn lacks (serving/connections.py), on a uvicorn server in a thread
with a tiny app; `tests/integration/test_server_limits.py` shows them in the real server."""

from __future__ import annotations

import asyncio
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from sentiment_mlops.serving.connections import ConnectionLimits, ServingConfig
from sentiment_mlops.serving.launcher import HOST, free_port

from ..sockets import PARTIAL_HEADER, held_open, outcome

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
HOLD = b"GET /hold HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class App:
    """Answers "ok"; requests to /hold wait until `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.holding = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/hold":
            self.holding += 1
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def serving(
    app: App, header_timeout: float, max_connections: int, per_address: int = 0
) -> Iterator[int]:
    """The port of a uvicorn server with our protocol and these limits, stopped on exit."""
    port = free_port()
    config = ServingConfig(
        app,
        limits=ConnectionLimits(header_timeout, max_connections, max_per_address=per_address),
        host=HOST,
        port=port,
        lifespan="off",
        log_config=None,
        timeout_keep_alive=60,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started)
    try:
        yield port
    finally:
        app.release.set()
        server.should_exit = True
        thread.join(timeout=10)


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def connect(port: int, data: bytes = b"", source: str | None = None) -> socket.socket:
    """A connection to the server, from another loopback address if `source` is given."""
    sock = socket.create_connection((HOST, port), source_address=(source, 0) if source else None)
    sock.sendall(data)
    return sock


def first_response(sock: socket.socket) -> str:
    """The status line of the next response, read whole (its body is "ok")."""
    sock.settimeout(10)
    received = b""
    while not received.endswith(b"ok") and (chunk := sock.recv(4096)):
        received += chunk
    return received.split(b"\r\n", 1)[0].decode()


def soon() -> float:
    return time.monotonic() + 10


def test_headers_not_sent_in_time_get_408_then_the_connection_is_closed() -> None:
    with serving(App(), header_timeout=0.3, max_connections=10) as port:
        silent = connect(port)
        partial = connect(port, PARTIAL_HEADER)
        kept_alive = connect(port, REQUEST)
        assert first_response(kept_alive).startswith("HTTP/1.1 200")
        kept_alive.sendall(PARTIAL_HEADER)  # the next request, never finished
        ends = [outcome(sock, soon()) for sock in (silent, partial, kept_alive)]
    assert ends == ["closed", "HTTP/1.1 408 Request Timeout", "HTTP/1.1 408 Request Timeout"]


def test_at_the_cap_a_new_connection_closes_the_longest_idle_one() -> None:
    app = App()
    with serving(app, header_timeout=60, max_connections=3) as port:
        oldest = connect(port, PARTIAL_HEADER)
        busy = connect(port, HOLD)
        wait_until(lambda: app.holding == 1)
        newer = connect(port)
        newest = connect(port, REQUEST)
        answer = first_response(newest)
        evicted = outcome(oldest, soon())
        held = [held_open(busy), held_open(newer)]
    assert answer.startswith("HTTP/1.1 200")
    assert evicted == "HTTP/1.1 408 Request Timeout"
    assert held == [True, True]


def test_when_every_connection_has_a_request_in_flight_a_new_one_gets_503() -> None:
    app = App()
    with serving(app, header_timeout=60, max_connections=2) as port:
        in_flight = [connect(port, HOLD), connect(port, HOLD)]
        wait_until(lambda: app.holding == 2)
        refused = outcome(connect(port, REQUEST), soon())
        app.release.set()
        answers = [first_response(sock) for sock in in_flight]
    assert refused == "HTTP/1.1 503 Service Unavailable"
    assert all(a.startswith("HTTP/1.1 200") for a in answers)


def test_one_address_cannot_take_more_than_its_share_of_connections() -> None:
    """Cap 2 per address: a third idle connection from 127.0.0.2 closes its oldest; with both
    of 127.0.0.3's busy, a third from it is closed at once; 127.0.0.1 is not affected."""
    app = App()
    with serving(app, header_timeout=60, max_connections=100, per_address=2) as port:
        first, second = connect(port, source="127.0.0.2"), connect(port, source="127.0.0.2")
        third = connect(port, REQUEST, source="127.0.0.2")
        answer = first_response(third)
        evicted = outcome(first, soon())
        busy = [connect(port, HOLD, source="127.0.0.3") for _ in range(2)]
        wait_until(lambda: app.holding == 2)
        refused = outcome(connect(port, REQUEST, source="127.0.0.3"), soon())
        others = [connect(port, REQUEST) for _ in range(3)]
        other_answers = [first_response(sock) for sock in others]
        held = [held_open(second), *(held_open(sock) for sock in busy)]
    assert answer.startswith("HTTP/1.1 200")
    assert evicted == "closed"
    assert refused in ("closed", "reset")  # closed unread: the kernel may answer with a reset
    assert all(a.startswith("HTTP/1.1 200") for a in other_answers)
    assert held == [True, True, True]


def test_the_soft_open_file_limit_is_raised_and_the_cap_kept_below_it() -> None:
    code = (
        "import resource;"
        "from sentiment_mlops.config import Settings;"
        "from sentiment_mlops.serving.connections import connection_limits;"
        "limits = connection_limits(Settings(max_connections=5000));"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], limits.max_connections)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024)),
    )
    assert done.stdout.split() == ["1024", str(1024 - 128)]
