"""The HTTP API in process (`create_app` + TestClient): the contract, bad input, auth,
metrics and the access log, against the default model served from a fake registry."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.pipeline import Pipeline

from sentiment_mlops.serving.app import create_app
from sentiment_mlops.serving.clients import add_client

from ..apps import SECRET, api_settings, bearer, captured_logs, eventually, mint, ready_client
from ..fakes import FakeSource

LIMITS = {"max_text_chars": 300, "max_batch_size": 8, "max_body_bytes": 20_000}


@pytest.fixture(scope="module")
def var(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api") / "var"


@pytest.fixture(scope="module")
def client_secret(var: Path) -> str:
    return add_client(api_settings(var).clients_file(), "batch-job", ["predict", "feedback"])


@pytest.fixture(scope="module")
def api(var: Path, default_model: Pipeline, client_secret: str) -> Iterator[TestClient]:
    app = create_app(api_settings(var, **LIMITS), FakeSource({1: default_model}, {"champion": 1}))
    with ready_client(app, headers=bearer("predict")) as client:
        yield client


@pytest.fixture(scope="module")
def http(api: TestClient) -> TestClient:
    """The same client: it sends a predict-scoped token unless a test says otherwise."""
    return api


def anonymous(client: TestClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """A request without the client's default Authorization header."""
    request = client.build_request(method, url, **kwargs)
    del request.headers["authorization"]
    return client.send(request)


def test_predict_returns_the_contract(http: TestClient) -> None:
    response = http.post("/predict", json={"text": "Thanks for the great service", "user_id": "u1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"label", "probabilities", "model_version", "variant", "prediction_id"}
    assert body["label"] == "positive"
    assert set(body["probabilities"]) == {"negative", "positive"}
    assert sum(body["probabilities"].values()) == pytest.approx(1.0)
    assert body["probabilities"]["positive"] > 0.5
    assert body["model_version"] == 1
    assert body["variant"] == "champion"
    other = http.post("/predict", json={"text": "Thanks for the great service"}).json()
    assert other["prediction_id"] != body["prediction_id"]
    # An entity key is accepted and ignored by a model without entity features.
    keyed = http.post("/predict", json={"text": "Thanks", "user_id": "u1", "account": "Delta"})
    assert keyed.status_code == 200 and "features" not in keyed.json()


TEXTS = [
    "I love this",
    "My flight was cancelled again",
    "ok then",
    "the crew lost my bag but the refund came quickly",
    "<b>great</b> service!!! 10/10",
]


def test_single_and_batch_predictions_are_sklearn_s(
    http: TestClient, default_model: Pipeline
) -> None:
    """The oracle is sklearn's own `predict_proba`, not the server compared with itself."""
    expected = default_model.predict_proba(TEXTS)
    classes = [str(c) for c in default_model.classes_]
    batch = http.post("/predict/batch", json={"texts": TEXTS})
    assert batch.status_code == 200, batch.text
    results = batch.json()["predictions"]
    singles = [http.post("/predict", json={"text": text}).json() for text in TEXTS]
    for row, result, single in zip(expected, results, singles, strict=True):
        for answer in (result, single):
            assert answer["label"] == classes[int(np.argmax(row))]
            got = [answer["probabilities"][c] for c in classes]
            np.testing.assert_allclose(got, row, rtol=0, atol=1e-12)


def test_large_batch_is_scored_off_the_event_loop_with_the_same_numbers(
    var: Path, default_model: Pipeline
) -> None:
    texts = [f"{text} #{i}" for i in range(40) for text in TEXTS[:1]]
    app = create_app(api_settings(var), FakeSource({1: default_model}, {"champion": 1}))
    with ready_client(app, headers=bearer("predict")) as client:
        response = client.post("/predict/batch", json={"texts": texts})
    assert response.status_code == 200
    got = [p["probabilities"]["positive"] for p in response.json()["predictions"]]
    np.testing.assert_allclose(got, default_model.predict_proba(texts)[:, 1], rtol=0, atol=1e-12)


BAD_BODIES = [
    ({"text": ""}, 422, "text"),
    ({"text": "   \n\t "}, 422, "empty or whitespace"),
    ({"text": 123}, 422, "string"),
    ({"text": None}, 422, "string"),
    ({"text": ["a"]}, 422, "string"),
    ({}, 422, "text"),
    ({"text": "x" * 301}, 422, "limit is 300"),
    ({"text": "ok", "user_id": 5}, 422, "string"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_BODIES)
def test_bad_predict_bodies_get_a_4xx_with_a_message(
    http: TestClient, body: object, status: int, message: str
) -> None:
    response = http.post("/predict", json=body)
    assert response.status_code == status
    assert message in response.text


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"text": "unterminated', "application/json", 422),
        (b'{"text": "caf\xe9 \xff"}', "application/json", 400),
        (b'{"text": "\\ud800 lone surrogate"}', "application/json", 422),
        (b"text=hello", "application/x-www-form-urlencoded", 415),
        (b'{"text": "hello"}', "text/plain", 415),
        (b"", "application/json", 422),
        (b"[1, 2]", "application/json", 422),
    ],
)
def test_malformed_requests_are_4xx_never_5xx(
    http: TestClient, content: bytes, content_type: str, status: int
) -> None:
    response = http.post("/predict", content=content, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("content", "status"),
    [(b'{"text": "unterminated', 422), (b"not json", 422), (b'{"text": "caf\xe9 \xff"}', 400)],
)
def test_malformed_json_is_answered_before_auth(
    api: TestClient, content: bytes, status: int
) -> None:
    """As README's Security section says: no token needed to learn the body is not JSON."""
    headers = {"Content-Type": "application/json"}
    response = anonymous(api, "POST", "/predict", content=content, headers=headers)
    assert response.status_code == status, response.text


def test_duplicate_json_keys_are_not_refused_the_last_wins(http: TestClient) -> None:
    duplicated = b'{"text": "awful terrible service", "text": "Thanks for the great service"}'
    response = http.post(
        "/predict", content=duplicated, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "positive"
    first = http.post("/predict", json={"text": "awful terrible service"}).json()
    assert first["label"] == "negative"


def test_batch_limits(http: TestClient) -> None:
    too_many = http.post("/predict/batch", json={"texts": ["good"] * 9})
    assert too_many.status_code == 422 and "limit is 8" in too_many.text
    assert http.post("/predict/batch", json={"texts": []}).status_code == 422
    one_empty = http.post("/predict/batch", json={"texts": ["good", " "]})
    assert one_empty.status_code == 422 and "texts[1]" in one_empty.text


def test_body_size_is_limited_before_parsing(http: TestClient) -> None:
    big = json.dumps({"text": "a" * 30_000}).encode()
    declared = http.post("/predict", content=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    streamed = http.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert "limit of 20000 bytes" in streamed.json()["detail"]


def _alg_none_token() -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {
        "sub": "x",
        "scope": "predict admin",
        "iss": "sentiment-mlops",
        "aud": "sentiment-api",
        "exp": int(time.time()) + 600,
        "iat": int(time.time()),
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _signed(secret: str = SECRET, **overrides: object) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "x",
        "scope": "predict",
        "iss": "sentiment-mlops",
        "aud": "sentiment-api",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, "HS256")


# Tokens are made when each test runs: the suite takes minutes, and a token made at collection
# time could expire before its test.
@pytest.mark.parametrize(
    ("token", "status", "message"),
    [
        (None, 401, "missing"),
        (lambda: "not-a-jwt", 401, "invalid token"),
        (lambda: _signed(exp=int(time.time()) - 3600), 401, "expired"),
        (
            lambda: _signed(secret="another-secret-that-is-long-enough-1234567"),
            401,
            "invalid token",
        ),
        (lambda: _alg_none_token(), 401, "invalid token"),
        (lambda: _signed(aud="someone-else"), 401, "invalid token"),
        (lambda: _signed(iss="someone-else"), 401, "invalid token"),
        (lambda: _signed(exp=None), 401, "invalid token"),
        # Far-future or non-integer times once overflowed datetime: a 500 on every route.
        (lambda: _signed(exp=10**13), 401, "exp lies more than"),
        (lambda: _signed(exp=2**63), 401, "exp lies more than"),
        (lambda: _signed(exp=1e308), 401, "exp claim must be an integer"),
        (lambda: _signed(exp=str(int(time.time()) + 600)), 401, "exp claim must be an integer"),
        (lambda: _signed(iat=float(int(time.time()))), 401, "iat claim must be an integer"),
        (lambda: _signed(scope="feedback"), 403, "predict"),
    ],
    ids=[
        "missing",
        "garbage",
        "expired",
        "wrong-signature",
        "alg-none",
        "wrong-audience",
        "wrong-issuer",
        "no-expiry",
        "exp-10e13",
        "exp-2e63",
        "exp-1e308-float",
        "exp-string",
        "iat-float",
        "under-scoped",
    ],
)
def test_bad_tokens_are_refused(
    api: TestClient, token: Callable[[], str] | None, status: int, message: str
) -> None:
    if token is None:
        response = anonymous(api, "POST", "/predict", json={"text": "hi there"})
    else:
        headers = {"Authorization": f"Bearer {token()}"}
        response = api.post("/predict", json={"text": "hi there"}, headers=headers)
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_admin_route_needs_admin_scope(http: TestClient) -> None:
    assert http.post("/admin/reload").status_code == 403
    response = http.post("/admin/reload", headers=bearer("admin"))
    assert response.status_code == 200
    assert response.json()["results"] == [
        {"alias": "champion", "version": 1, "result": "unchanged", "error": None}
    ]


def test_open_endpoints(api: TestClient) -> None:
    assert anonymous(api, "GET", "/health").json() == {"status": "ok", "detail": None}
    ready = eventually(
        lambda: (body := anonymous(api, "GET", "/ready").json())["prediction_log"] == "ok" and body,
        "the prediction log's tables ready",
    )
    assert ready == {"status": "ready", "detail": "champion version 1", "prediction_log": "ok"}
    assert anonymous(api, "GET", "/metrics").status_code == 200
    assert "/predict" in anonymous(api, "GET", "/openapi.json").json()["paths"]


def test_models_lists_the_loaded_version(http: TestClient) -> None:
    (model,) = http.get("/models").json()["models"]
    assert model["alias"] == "champion" and model["version"] == 1
    assert model["scorer"] == "compiled"
    assert model["classes"] == ["negative", "positive"]
    assert len(model["sha256"]) == 64 and model["run_id"] == "run-1"


def test_client_credentials_grant(api: TestClient, client_secret: str) -> None:
    response = anonymous(
        api,
        "POST",
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "batch-job",
            "client_secret": client_secret,
            "scope": "predict",
        },
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert response.json()["scope"] == "predict"
    ok = api.post("/predict", json={"text": "great"}, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    wrong = anonymous(
        api,
        "POST",
        "/token",
        data={"grant_type": "client_credentials", "client_id": "batch-job", "client_secret": "no"},
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_metrics_are_labelled_by_version_and_variant(http: TestClient) -> None:
    http.post("/predict", json={"text": "what a wonderful day"})
    text = http.get("/metrics").text
    assert 'model_predictions_total{label="positive",model_version="1",variant="champion"}' in text
    assert 'http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'model_inference_duration_seconds_count{model_version="1",variant="champion"}' in text
    assert "model_prediction_confidence_bucket" in text
    assert "model_input_length_chars_bucket" in text
    assert 'model_info{model_version="1",scorer="compiled"' in text
    assert 'model_reloads_total{result="success",variant="champion"} 1.0' in text


def test_one_json_log_line_per_request_without_the_text(http: TestClient) -> None:
    secret_text = "my very private complaint about seat 12C"
    with captured_logs() as lines:
        response = http.post(
            "/predict", json={"text": secret_text}, headers={"X-Request-ID": "req-42"}
        )
    assert response.headers["x-request-id"] == "req-42"
    assert secret_text not in json.dumps(lines)
    (line,) = [r for r in lines if r.get("request_id") == "req-42"]
    assert line["msg"] == "request" and line["route"] == "/predict" and line["status"] == 200
    assert line["model_version"] == 1 and line["variant"] == "champion"
    assert line["latency_ms"] > 0
    assert "texts" not in line


def test_auth_disabled_needs_no_token_and_logs_texts_when_asked(
    var: Path, default_model: Pipeline
) -> None:
    settings = api_settings(var, auth_disabled=True, log_texts=True)
    app = create_app(settings, FakeSource({1: default_model}, {"champion": 1}))
    with captured_logs() as lines, ready_client(app) as client:
        response = client.post("/predict/batch", json={"texts": ["great crew", "awful seat"]})
    assert response.status_code == 200
    assert any(r["level"] == "warning" and "DISABLED" in r["msg"] for r in lines)
    (logged,) = [r for r in lines if r.get("route") == "/predict/batch"]
    assert logged["texts"] == ["great crew", "awful seat"], "logged when the operator opts in"


def test_no_model_yet_means_503_and_not_ready(var: Path, default_model: Pipeline) -> None:
    app = create_app(api_settings(var), FakeSource({1: default_model}, {}))
    reason = "no verified 'champion' model is loaded yet: alias 'champion' not set in the registry"
    with TestClient(app, headers=bearer("predict")) as client:
        eventually(lambda: client.get("/ready").json()["detail"] == reason, "the reason given")
        ready = client.get("/ready")
        predict = client.post("/predict", json={"text": "great"})
    assert ready.status_code == 503 and ready.json()["detail"] == reason
    assert predict.status_code == 503 and predict.json()["detail"] == reason


def test_tokens_minted_by_the_cli_helper_are_accepted(http: TestClient) -> None:
    token = mint("predict", ttl=60, subject="someone")
    response = http.post(
        "/predict", json={"text": "fine"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
