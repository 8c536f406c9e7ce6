"""Connection limits uvicorn does not have, and the open-file headroom they are sized to.

uvicorn 0.54 times out only the wait between two requests of a kept-alive connection
(`timeout_keep_alive`): a client that connects and sends half a header is kept forever, and
each such connection holds a file descriptor until the process has none left. Its
`limit_concurrency` does not bound them either: it answers 503 only once a request's headers are
complete, and it counts these half-open connections, so enough of them would turn every real
request into a 503.

`GuardedHttpToolsProtocol`, uvicorn's httptools protocol selected with `http=`, adds these
limits per worker, all from `ConnectionLimits`:

- **header timeout**: from connect (or the first byte of the next request on a kept-alive
  connection) until the request's headers are complete; then 408 and close.
- **header size**: the request line and headers together may hold `max_header_bytes`;
  beyond, 431 and close (uvicorn parsed headers of any size: 8 x 40 MB at once took 300 MB).
- **body timeout**: from the end of the headers until the whole body is in; then 408 and
  close. Without it a client sending one body byte every few seconds held its connection, and
  its slot under the cap (a connection with a request in flight is never evicted), for as
  long as it liked: 2,100 of them left legitimate requests 503.
- **per-address cap**: a new connection beyond `max_connections_per_address` from one client
  address closes that address's connection idle longest, or is closed at once when all of
  them have a request in flight: one client cannot take every slot of the worker.
- **connection cap**: a new connection beyond the cap closes the connection that has waited
  longest without a request in flight (idle, or still sending its headers: 408), as nginx
  reuses its idle connections. If every connection has a request in flight, the new one is
  answered 503 as soon as its headers are in (uvicorn's own 503, `limit_concurrency` set to
  0 for that connection alone); until then it is the idle one the next newcomer may close, so
  a worker never holds more than one connection past its cap.

`connection_limits` raises the soft open-file limit to the hard one and lowers the cap to fit.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from sentiment_mlops.config import Settings

log = logging.getLogger("sentiment_mlops.serving.connections")

PROTOCOL = "sentiment_mlops.serving.connections:GuardedHttpToolsProtocol"
# Descriptors kept for everything but client connections: a worker uses ~20 at rest (stdio,
# the listening socket, the event loop, the parent's pipe), plus registry database
# connections, model files while a new version loads, the metric files and connections
# accepted in one burst before the cap acts on them.
FD_RESERVE = 128
REPORT_EVERY_SECONDS = 10.0


def _answer(status: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, len(text), text)
    )


REQUEST_TIMEOUT = _answer(b"408 Request Timeout", b"request headers not sent in time\n")
BODY_TIMEOUT = _answer(b"408 Request Timeout", b"request body not sent in time\n")
HEADERS_TOO_LARGE = _answer(
    b"431 Request Header Fields Too Large", b"request line and headers too large\n"
)


@dataclass(frozen=True)
class ConnectionLimits:
    """Per worker: seconds a client has to send its request headers, then its body; the
    bytes its request line and headers may take; connections held."""

    header_timeout: float
    max_connections: int
    body_timeout: float = 30.0
    max_header_bytes: int = 65_536
    max_per_address: int = 0  # 0: no cap


class ServingConfig(uvicorn.Config):
    """uvicorn's Config carrying our `ConnectionLimits` to the protocol, in every worker."""

    def __init__(self, app: str, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, http=PROTOCOL, **kwargs)
        self.limits = limits


def connection_limits(settings: Settings) -> ConnectionLimits:
    """Raise the soft open-file limit to the hard one (workers inherit it) and keep the
    connection cap `FD_RESERVE` descriptors below it (half of it for very low limits)."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = before
    if before != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit", extra={"error": str(exc)})
    cap = settings.max_connections
    if soft != resource.RLIM_INFINITY:
        cap = min(cap, soft - min(FD_RESERVE, soft // 2))
    fields = {
        "soft_limit_before": before,
        "soft_limit": soft,
        "hard_limit": hard,
        "fd_reserve": FD_RESERVE,
        "max_connections": cap,
        "max_connections_per_address": settings.max_connections_per_address,
        "header_timeout_seconds": settings.header_timeout_seconds,
        "body_timeout_seconds": settings.body_timeout_seconds,
        "max_header_bytes": settings.max_header_bytes,
        "keep_alive_seconds": settings.keep_alive_seconds,
    }
    if cap < settings.max_connections:
        log.warning("connection cap lowered to fit the open-file limit", extra=fields)
    else:
        log.info("connection limits per worker", extra=fields)
    return ConnectionLimits(
        settings.header_timeout_seconds,
        cap,
        body_timeout=settings.body_timeout_seconds,
        max_header_bytes=settings.max_header_bytes,
        max_per_address=settings.max_connections_per_address,
    )


@dataclass
class _Worker:
    """What the connections of one worker share: the idle ones, oldest first, and the drops
    not yet reported (one log line per `REPORT_EVERY_SECONDS` at most)."""

    connections: set[Any]
    idle: dict[GuardedHttpToolsProtocol, None] = field(default_factory=dict)
    by_address: dict[str, set[GuardedHttpToolsProtocol]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    reported_at: float = float("-inf")
    report_due: bool = False

    def count(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if self.report_due:
            return
        wait = self.reported_at + REPORT_EVERY_SECONDS - time.monotonic()
        if wait <= 0:
            self.report()
        else:
            asyncio.get_running_loop().call_later(wait, self.report)
            self.report_due = True

    def report(self) -> None:
        fields = {**self.dropped, "connections": len(self.connections)}
        log.warning("connections dropped", extra=fields)
        self.dropped = {}
        self.reported_at = time.monotonic()
        self.report_due = False


# uvicorn's ServerState is the one object all connections of a worker share; ours hangs off it.
_workers: weakref.WeakKeyDictionary[ServerState, _Worker] = weakref.WeakKeyDictionary()


def _worker_of(state: ServerState) -> _Worker:
    if state not in _workers:
        _workers[state] = _Worker(state.connections)
    return _workers[state]


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not isinstance(config, ServingConfig):
            raise TypeError(f"{type(self).__name__} needs a ServingConfig (serving/server.py)")
        super().__init__(config, server_state, app_state, _loop)
        self.limits = config.limits
        self.worker = _worker_of(server_state)
        self.header_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.request_begun = False
        self.address: str | None = None  # counted under the per-address cap
        self.header_bytes = 0  # received in earlier reads while the headers were incomplete
        self.parsed_header_bytes = 0  # of the current request, as parsed
        self.headers_too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self._within_address_cap():
            return
        if len(self.connections) > self.limits.max_connections:
            idlest = next(iter(self.worker.idle), None)
            if idlest is not None:
                idlest._drop("evicted")
            else:  # every connection has a request in flight: uvicorn answers 503 to this one
                self.limit_concurrency = 0
                self.worker.count("refused")
        self._await_headers()
        self.worker.idle[self] = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.request_begun = True
        self.parsed_header_bytes = 0
        if self.header_timer is None:
            self._await_headers()

    def data_received(self, data: bytes) -> None:
        """Bytes received while a request's headers are still incomplete count towards its
        header limit: the parser keeps a header value it has not seen the end of, so a client
        sending one endless header would otherwise grow it until the header timeout."""
        super().data_received(data)
        if self.header_timer is None or self.transport.is_closing():
            self.header_bytes = 0
            return
        self.header_bytes += len(data)
        if self.header_bytes > self.limits.max_header_bytes:
            self.headers_too_large = True
            self.send_400_response("")

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_header_bytes(self, size: int) -> None:
        """Headers counted as the parser hands them over, for those that arrive whole in one
        read. Past the limit, stop the parser: uvicorn answers its parse errors through
        `send_400_response`, which answers 431."""
        self.parsed_header_bytes += size
        if self.parsed_header_bytes > self.limits.max_header_bytes:
            self.headers_too_large = True
            raise ValueError("request line and headers too large")

    def send_400_response(self, msg: str) -> None:
        if not self.headers_too_large:
            super().send_400_response(msg)
            return
        self._close("headers_too_large", HEADERS_TOO_LARGE)

    def on_headers_complete(self) -> None:
        self.request_begun = False
        self._stop_waiting()
        self.worker.idle.pop(self, None)
        super().on_headers_complete()
        self.body_timer = self.loop.call_later(self.limits.body_timeout, self._body_late)

    def on_message_complete(self) -> None:
        self._stop_body_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._busy():
            self.worker.idle[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        self._stop_body_timer()
        self._leave_address()
        self.worker.idle.pop(self, None)
        super().connection_lost(exc)

    def _within_address_cap(self) -> bool:
        """Count this connection under its client's address; past the cap, close that
        address's idlest connection, or this one if all of them have requests in flight."""
        cap = self.limits.max_per_address
        address = self.client[0] if self.client else None
        if not cap or address is None:
            return True
        mine = self.worker.by_address.setdefault(address, set())
        if len(mine) >= cap:
            idlest = next((c for c in self.worker.idle if c in mine), None)
            if idlest is None:
                self._close("address_cap")
                return False
            idlest._drop("address_evicted")
        mine.add(self)
        self.address = address
        return True

    def _leave_address(self) -> None:
        if self.address is None:
            return
        mine = self.worker.by_address.get(self.address)
        if mine is not None:
            mine.discard(self)
            if not mine:
                del self.worker.by_address[self.address]
        self.address = None

    def _busy(self) -> bool:
        """A request of this connection is being answered."""
        return self.cycle is not None and not self.cycle.response_complete

    def _await_headers(self) -> None:
        self.header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_late)

    def _stop_waiting(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _stop_body_timer(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def _body_late(self) -> None:
        """The body is still not all in: answer 408 unless the app has begun its answer (it
        read what it needed), and close; the app's next read sees a disconnect."""
        self.body_timer = None
        if self.transport.is_closing():
            return
        answered = self.cycle is None or self.cycle.response_started
        self._close("body_timeout", None if answered else BODY_TIMEOUT)

    def _headers_late(self) -> None:
        self.header_timer = None
        if self.transport.is_closing():
            return
        if self._busy():  # a pipelined request is being answered: close once it is
            self.cycle.keep_alive = False
            return
        self._drop("header_timeout")

    def _drop(self, reason: str) -> None:
        """Close a connection with no request in flight; 408 if a request had begun."""
        self._close(reason, REQUEST_TIMEOUT if self.request_begun else None)

    def _close(self, reason: str, answer: bytes | None = None) -> None:
        """Every way a limit ends a connection: `answer` sent if any, the connection closed
        and its slots (the cap's, its address's) freed now, not once the loop gets to it,
        and the drop counted under `reason`."""
        self._stop_waiting()
        self._stop_body_timer()
        self.worker.idle.pop(self, None)
        if answer is not None:
            self.transport.write(answer)
        self.transport.close()
        self.connections.discard(self)
        self._leave_address()
        self.worker.count(reason)
