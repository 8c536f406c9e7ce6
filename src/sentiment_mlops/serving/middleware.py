"""Per-request plumbing as plain ASGI (cheaper than Starlette's BaseHTTPMiddleware).

Gives every request an id, refuses bodies over the limit before anything parses them,
and records one log line and the HTTP metrics once the response is sent.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass

from fastapi import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentiment_mlops.serving.logs import request_id
from sentiment_mlops.serving.metrics import Metrics
from sentiment_mlops.serving.random_bytes import random_bytes

access_log = logging.getLogger("sentiment_mlops.serving.access")

_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass
class AccessRecord:
    """What a handler tells the access log about its request, beyond what HTTP shows.

    The middleware creates one per request before calling the app and logs it afterwards;
    handlers fill it in through the `AccessRecordDep` dependency.
    """

    model_version: int | None = None
    variant: str | None = None
    texts: list[str] | None = None  # only when the operator set SENTIMENT_LOG_TEXTS

    _SCOPE_KEY = "sentiment_mlops.access"

    @classmethod
    def attach(cls, scope: Scope) -> AccessRecord:
        record = cls()
        scope[cls._SCOPE_KEY] = record
        return record

    @classmethod
    def of(cls, scope: Scope) -> AccessRecord:
        """The request's record; a detached one (logged by nobody) outside the middleware."""
        record = scope.get(cls._SCOPE_KEY)
        return record if isinstance(record, cls) else cls()


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        arrived = dict(scope)  # routing rewrites root_path for mounts; keep it as it came
        rid = _incoming_request_id(scope) or random_bytes(16).hex()
        token = request_id.set(rid)
        record = AccessRecord.attach(scope)
        status = 500
        response_started = False
        received = 0
        limit = self.max_body_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                await _send_error(send_with_id, 413, BodyTooLarge(limit).detail)
            else:
                await self.app(scope, limited_receive, send_with_id)
        except BodyTooLarge as exc:
            if not response_started:
                await _send_error(send_with_id, 413, exc.detail)
        finally:
            self._record(scope, arrived, record, status, time.perf_counter() - started)
            request_id.reset(token)

    def _record(
        self, scope: Scope, arrived: Scope, record: AccessRecord, status: int, seconds: float
    ) -> None:
        template = route_template(scope, arrived)
        method = scope["method"]
        self.metrics.requests.labels(method, template, str(status)).inc()
        self.metrics.request_duration.labels(method, template).observe(seconds)
        fields: dict[str, object] = {
            "method": method,
            "route": template,
            "path": scope["path"],
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
            "model_version": record.model_version,
            "variant": record.variant,
        }
        if record.texts is not None:
            fields["texts"] = record.texts
        access_log.info("request", extra=fields)


def route_template(scope: Scope, arrived: Scope) -> str:
    """The path template of the route that took the request, or "unmatched".

    FastAPI records its API routes in `scope["route"]` but not the plain routes and mounts it
    also serves (the OpenAPI schema, the docs and their static files). Those are found again
    the way the router found them, on the request as it `arrived`. A mount is one template,
    `<prefix>/{path}`, whatever file was asked for, so the label values stay few.
    """
    route = scope.get("route") or _match(arrived)
    return getattr(route, "path_format", None) or "unmatched"


def _match(scope: Scope) -> BaseRoute | None:
    """The route the app's router picks for `scope`: the first full match, else the first
    partial one (a path served for other methods, answered with 405)."""
    partial = None
    for route in getattr(scope.get("app"), "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _VALID_REQUEST_ID.fullmatch(text) else None
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_error(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
