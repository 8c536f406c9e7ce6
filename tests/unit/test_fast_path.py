"""The flat ASGI path for /predict and /predict/batch (serving/fast_path.py): it answers what the
FastAPI route would answer, byte for byte but the random prediction ids, and leaves every other
request to the route, body included, without scoring or logging anything first."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from sklearn.pipeline import Pipeline
from starlette.types import Message, Receive, Scope, Send

from sentiment_mlops.serving.app import create_app
from sentiment_mlops.serving.fast_path import FastPredict

from ..apps import api_settings, mint, ready_client
from ..fakes import FakeSource, RecordingSink

LIMITS = {"max_text_chars": 300, "max_batch_size": 4}
ID = re.compile(rb'"prediction_id":"[0-9a-f-]{36}"')


@dataclass
class Reply:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


@dataclass
class Inner:
    """The app behind the flat path: records each request's scope and the body it could
    read, and answers 418."""

    calls: list[tuple[Scope, list[Message]]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        messages = [await receive()]
        while messages[-1]["type"] == "http.request" and messages[-1].get("more_body"):
            messages.append(await receive())
        self.calls.append((scope, messages))
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})


@pytest.fixture(scope="module")
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, default_model: Pipeline, sink: RecordingSink
) -> Iterator[FastAPI]:
    var = tmp_path_factory.mktemp("fast") / "var"
    source = FakeSource({1: default_model}, {"champion": 1})
    app = create_app(api_settings(var, **LIMITS), source, prediction_sink=sink)
    with ready_client(app):
        yield app


def call(
    asgi: Any,
    app: FastAPI,
    path: str,
    body: bytes | list[bytes],
    headers: dict[str, str],
    *,
    disconnect: bool = False,
) -> Reply:
    """One POST through `asgi`, the body in the given chunks (then a disconnect if asked)."""
    chunks = [body] if isinstance(body, bytes) else body
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1 or disconnect}
        for i, chunk in enumerate(chunks)
    ]
    if disconnect:
        messages.append({"type": "http.disconnect"})
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "app": app,
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(asgi(scope, receive, send))
    start, *bodies = sent
    return Reply(
        start["status"],
        dict(start.get("headers", [])),
        b"".join(m.get("body", b"") for m in bodies),
    )


def route_of(app: FastAPI) -> Any:
    """What the app's own FastPredict hands requests over to: FastAPI's exception handling
    and router, past every middleware."""
    layer = app.middleware_stack
    while not isinstance(layer, FastPredict):
        layer = layer.app  # type: ignore[union-attr]
    return layer.app


def json_headers(*scopes: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {mint(*scopes)}"}


VALID = [
    ("/predict", {"text": "Thanks for the great service"}),
    ("/predict", {"text": "my bag is lost again", "user_id": "u7", "account": "Delta"}),
    ("/predict/batch", {"texts": ["lovely crew", "awful delay", "ok then"]}),
]


@pytest.mark.parametrize(("path", "payload"), VALID)
def test_a_valid_request_is_answered_as_the_route_answers_it(
    app: FastAPI, sink: RecordingSink, path: str, payload: dict[str, Any]
) -> None:
    inner = Inner()
    body = json.dumps(payload).encode()
    before = len(sink.events)
    flat = call(FastPredict(inner), app, path, body, json_headers("predict"))
    assert inner.calls == [], "the flat path answered it"
    # The same request to FastAPI's route.
    routed = call(route_of(app), app, path, body, json_headers("predict"))
    assert (flat.status, routed.status) == (200, 200)
    assert flat.headers[b"content-type"] == routed.headers[b"content-type"] == b"application/json"
    assert int(flat.headers[b"content-length"]) == len(flat.body)
    assert ID.sub(b"ID", flat.body) == ID.sub(b"ID", routed.body)
    texts = payload.get("texts", [payload.get("text")])
    assert len(sink.events) == before + 2 * len(texts)
    ids = [p["prediction_id"] for p in _predictions(flat.body)]
    assert [e.prediction_id for e in sink.events[before : before + len(texts)]] == ids


def _predictions(body: bytes) -> list[dict[str, Any]]:
    answer = json.loads(body)
    found: list[dict[str, Any]] = answer.get("predictions", [answer])
    return found


def test_a_body_in_several_chunks_is_read_whole(app: FastAPI) -> None:
    inner = Inner()
    chunks = [b'{"text": "gre', b"at cr", b'ew"}']
    flat = call(FastPredict(inner), app, "/predict", chunks, json_headers("predict"))
    assert inner.calls == []
    assert flat.status == 200 and json.loads(flat.body)["label"] == "positive"


TOKEN = mint("predict")
REFUSED = {
    "a form body": ("/predict", b"text=hi", {"Content-Type": "application/x-www-form-urlencoded"}),
    "no content type": ("/predict", b'{"text": "hi"}', {}),
    "no token": ("/predict", b'{"text": "hi"}', {"Authorization": ""}),
    "not a bearer token": ("/predict", b'{"text": "hi"}', {"Authorization": f"Basic {TOKEN}"}),
    "a forged token": ("/predict", b'{"text": "hi"}', {"Authorization": f"Bearer {TOKEN}x"}),
    "a token without the predict scope": (
        "/predict",
        b'{"text": "hi"}',
        {"Authorization": f"Bearer {mint('feedback')}"},
    ),
    "a body that is not JSON": ("/predict", b'{"text": ', {}),
    "a body that is not UTF-8": ("/predict", b'{"text": "\xff"}', {}),
    "a JSON list": ("/predict", b'["hi"]', {}),
    "no text": ("/predict", b'{"txt": "hi"}', {}),
    "a number as text": ("/predict", b'{"text": 5}', {}),
    "an empty text": ("/predict", b'{"text": ""}', {}),
    "a blank text": ("/predict", b'{"text": "  \\n "}', {}),
    "a text over the limit": ("/predict", json.dumps({"text": "a" * 301}).encode(), {}),
    "a lone surrogate": ("/predict", b'{"text": "\\ud800"}', {}),
    "a variant without the admin scope": ("/predict", b'{"text": "hi", "variant": "champion"}', {}),
    "a variant the routing does not name": (
        "/predict",
        b'{"text": "hi", "variant": "nobody"}',
        {"Authorization": f"Bearer {mint('predict', 'admin')}"},
    ),
    "an empty batch": ("/predict/batch", b'{"texts": []}', {}),
    "a batch over the limit": ("/predict/batch", json.dumps({"texts": ["a"] * 5}).encode(), {}),
    "a batch with an empty text": ("/predict/batch", b'{"texts": ["good", ""]}', {}),
}


@pytest.mark.parametrize("case", REFUSED)
def test_every_request_the_route_would_refuse_is_left_to_it_untouched(
    app: FastAPI, sink: RecordingSink, case: str
) -> None:
    path, body, extra = REFUSED[case]
    headers = {k: v for k, v in {**json_headers("predict"), **extra}.items() if v}
    if case == "no content type":
        del headers["Content-Type"]
    before = len(sink.events)
    inner = Inner()
    reply = call(FastPredict(inner), app, path, body, headers)
    assert reply.status == 418, "handed to the route"
    ((scope, messages),) = inner.calls
    assert b"".join(m["body"] for m in messages) == body
    assert scope["path"] == path
    assert len(sink.events) == before, "nothing scored or logged before the handover"
    routed = call(route_of(app), app, path, body, headers)
    assert 400 <= routed.status < 500, (routed.status, routed.body)


def test_a_client_gone_mid_body_is_left_to_the_route(app: FastAPI) -> None:
    inner = Inner()
    reply = call(
        FastPredict(inner),
        app,
        "/predict",
        [b'{"text": "a whole text"}'],
        json_headers("predict"),
        disconnect=True,
    )
    assert reply.status == 418
    ((_, messages),) = inner.calls
    assert [m["type"] for m in messages] == ["http.request", "http.disconnect"]


def test_other_paths_and_methods_go_to_the_app(app: FastAPI) -> None:
    inner = Inner()
    asgi = FastPredict(inner)
    call(asgi, app, "/predict/other", b'{"text": "hi"}', json_headers("predict"))
    call(asgi, app, "/feedback", b"{}", json_headers("predict"))
    assert [scope["path"] for scope, _ in inner.calls] == ["/predict/other", "/feedback"]
