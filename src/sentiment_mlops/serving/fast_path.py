"""`POST /predict` and `/predict/batch` on a flat ASGI path: the same contract, without
FastAPI's per-request machinery.

Profiled in a loaded worker (one worker, c = 64), FastAPI's route matching, dependency
solving, body validation and response serialisation took about 37% of every prediction's
time, more than the scoring. This middleware, just inside `RequestContextMiddleware` (request
id, body limit, access log, HTTP metrics), answers a prediction request itself when it can be
answered, with the functions the FastAPI routes call: `auth.authorize`, `routes.plan`,
`routes.carry_out`, `routes.predictions`, and pydantic's serializer of the response model,
so the answer is byte for byte the route's.

Every other request goes to the FastAPI app unchanged, its body replayed: a content type other
than JSON, a body that is not JSON or does not validate, a missing, bad or insufficient token,
a text or batch over a limit, a variant the caller may not choose, no model to answer. Those
checks have no side effect (`routes.plan`), so the route runs them again and answers with its
own error: every 4xx and 503 is FastAPI's, and the routes stay in the OpenAPI schema and
`/docs` with the contract they had.
"""

from __future__ import annotations

import json

from fastapi import HTTPException
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentiment_mlops.serving.auth import authorize
from sentiment_mlops.serving.deps import Services
from sentiment_mlops.serving.middleware import AccessRecord
from sentiment_mlops.serving.models import NoModelLoaded
from sentiment_mlops.serving.routes import Plan, carry_out, is_json, plan, predictions, router
from sentiment_mlops.serving.schemas import BatchPrediction, BatchPredictRequest, PredictRequest

PATHS: dict[str, type[PredictRequest] | type[BatchPredictRequest]] = {
    "/predict": PredictRequest,
    "/predict/batch": BatchPredictRequest,
}
_JSON_HEADERS = [(b"content-type", b"application/json")]
# What makes a request leave the flat path for FastAPI's: each is raised before anything is
# scored or logged.
_REFUSALS = (HTTPException, NoModelLoaded, ValidationError, ValueError, TypeError)


class FastPredict:
    """Answers well-formed, authorised prediction requests; hands the rest to `app`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: dict[str, BaseRoute] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = PATHS.get(scope["path"]) if scope["type"] == "http" else None
        if kind is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        services: Services | None = getattr(scope["app"].state, "services", None)
        headers = _headers(scope)
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if services is None or not is_json(content_type):  # the route's `require_json` test
            await self.app(scope, receive, send)
            return
        messages = await _read_body(receive)
        planned = _plan(services, kind, headers.get(b"authorization"), messages)
        if planned is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        scope["route"] = self._route(scope["path"])  # the access log's and metrics' route template
        answer = await carry_out(
            planned, services.predictor, AccessRecord.of(scope), services.settings
        )
        found = predictions(answer)
        response: BaseModel = (
            found[0] if kind is PredictRequest else BatchPrediction(predictions=found)
        )
        payload = type(response).__pydantic_serializer__.to_json(response, exclude_none=True)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _route(self, path: str) -> BaseRoute | None:
        """The route FastAPI's router would have put in the scope (routes.py's, included
        without a prefix)."""
        if not self._routes:
            self._routes = {
                route.path: route
                for route in router.routes
                if isinstance(route, APIRoute) and "POST" in (route.methods or ())
            }
        return self._routes.get(path)


def _plan(
    services: Services,
    kind: type[PredictRequest] | type[BatchPredictRequest],
    authorization: bytes | None,
    messages: list[Message],
) -> Plan | None:
    """The request checked as the route checks it, or None where the route must answer
    (or the client left before sending the whole body)."""
    if messages[-1]["type"] != "http.request":
        return None
    header = authorization.decode("latin-1") if authorization is not None else None
    try:
        principal = authorize(services.authenticator, header or None, "predict")
        body = b"".join(m.get("body", b"") for m in messages)
        request = kind.model_validate(json.loads(body))
        return plan(request, principal, services.settings, services.pool)
    except _REFUSALS:
        return None


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The first value of each header, as Starlette's `Headers.get` reads it."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        found.setdefault(name, value)
    return found


async def _read_body(receive: Receive) -> list[Message]:
    """The messages of the whole body (the outer middleware's `receive` enforces the size
    limit), or up to the client's disconnect."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives `messages` again, then whatever the connection sends next."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
