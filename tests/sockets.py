"""Raw client sockets for tests about connections: whether, and how, the server ended one."""

from __future__ import annotations

import socket
import time

PARTIAL_HEADER = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def held_open(sock: socket.socket) -> bool:
    """The server has neither answered nor closed this connection yet."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def outcome(sock: socket.socket, deadline: float) -> str:
    """How the server ended the connection: the status line it sent before closing, "closed"
    (nothing sent), "reset", or "open" if it is still open at `deadline` (time.monotonic)."""
    received = b""
    try:
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(4096)
            if not chunk:
                return received.split(b"\r\n", 1)[0].decode() or "closed"
            received += chunk
    except TimeoutError:
        return "open"
    except ConnectionResetError:
        return "reset"
