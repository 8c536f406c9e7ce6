"""Per-request plumbing as plain ASGI (cheaper than Starlette's BaseHTTPMiddleware).

Gives every request an id, refuses bodies over the limit before anything parses them,
and records one log line and the HTTP metrics once the response is sent.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentiment_mlops.serving.logs import request_id
from sentiment_mlops.serving.metrics import Metrics

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
        rid = _incoming_request_id(scope) or uuid.uuid4().hex
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
            self._record(scope, record, status, time.perf_counter() - started)
            request_id.reset(token)

    def _record(self, scope: Scope, record: AccessRecord, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
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
