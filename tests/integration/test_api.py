"""The real server over HTTP: predictions, bad input, auth, metrics and logs."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from sentiment_mlops.config import Settings
from sentiment_mlops.serving.clients import add_client
from sentiment_mlops.serving.tokens import Authenticator

from .server import SECRET, Server, train_into

LIMITS = {"max_text_chars": 300, "max_batch_size": 8, "max_body_bytes": 20_000}


@pytest.fixture(scope="module")
def var(tmp_path_factory: pytest.TempPathFactory) -> Path:
    var = tmp_path_factory.mktemp("api") / "var"
    train_into(var)
    return var


@pytest.fixture(scope="module")
def client_secret(var: Path) -> str:
    return add_client(Settings(var_dir=var).clients_file(), "batch-job", ["predict", "feedback"])


@pytest.fixture(scope="module")
def server(
    var: Path, client_secret: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    srv = Server(var, tmp_path_factory.mktemp("logs") / "server.log", **LIMITS)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def mint(*scopes: str, ttl: int | None = None, **settings: object) -> str:
    auth = Authenticator.from_settings(Settings(jwt_secret=SECRET, **settings))  # type: ignore[arg-type]
    return auth.mint("tester", scopes, ttl)


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {mint('predict')}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        yield client


def test_predict_returns_the_contract(http: httpx.Client) -> None:
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


def test_batch_matches_single_predictions_in_order(http: httpx.Client) -> None:
    texts = ["I love this", "My flight was cancelled again", "ok then"]
    batch = http.post("/predict/batch", json={"texts": texts})
    assert batch.status_code == 200, batch.text
    results = batch.json()["predictions"]
    assert len(results) == 3
    for text, result in zip(texts, results, strict=True):
        single = http.post("/predict", json={"text": text}).json()
        assert result["label"] == single["label"]
        assert result["probabilities"] == pytest.approx(single["probabilities"], abs=1e-12)


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
    http: httpx.Client, body: object, status: int, message: str
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
    http: httpx.Client, content: bytes, content_type: str, status: int
) -> None:
    response = http.post("/predict", content=content, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_batch_limits(http: httpx.Client) -> None:
    too_many = http.post("/predict/batch", json={"texts": ["good"] * 9})
    assert too_many.status_code == 422 and "limit is 8" in too_many.text
    assert http.post("/predict/batch", json={"texts": []}).status_code == 422
    one_empty = http.post("/predict/batch", json={"texts": ["good", " "]})
    assert one_empty.status_code == 422 and "texts[1]" in one_empty.text


def test_body_size_is_limited_before_parsing(http: httpx.Client) -> None:
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


@pytest.mark.parametrize(
    ("token", "status", "message"),
    [
        (None, 401, "missing"),
        ("not-a-jwt", 401, "invalid token"),
        (_signed(exp=int(time.time()) - 3600), 401, "expired"),
        (_signed(secret="another-secret-that-is-long-enough-1234567"), 401, "invalid token"),
        (_alg_none_token(), 401, "invalid token"),
        (_signed(aud="someone-else"), 401, "invalid token"),
        (_signed(iss="someone-else"), 401, "invalid token"),
        (_signed(exp=None), 401, "invalid token"),
        (_signed(scope="feedback"), 403, "predict"),
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
        "under-scoped",
    ],
)
def test_bad_tokens_are_refused(
    server: Server, token: str | None, status: int, message: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(f"{server.url}/predict", json={"text": "hi there"}, headers=headers)
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_admin_route_needs_admin_scope(server: Server, http: httpx.Client) -> None:
    assert http.post("/admin/reload").status_code == 403
    admin = {"Authorization": f"Bearer {mint('admin')}"}
    response = httpx.post(f"{server.url}/admin/reload", headers=admin)
    assert response.status_code == 200
    assert response.json()["results"] == [
        {"alias": "champion", "version": 1, "result": "unchanged", "error": None}
    ]


def test_open_endpoints(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "detail": None}
    assert httpx.get(f"{server.url}/ready").status_code == 200
    assert httpx.get(f"{server.url}/metrics").status_code == 200
    assert httpx.get(f"{server.url}/docs").status_code == 200
    assert "/predict" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


def test_models_lists_the_loaded_version(http: httpx.Client) -> None:
    (model,) = http.get("/models").json()["models"]
    assert model["alias"] == "champion" and model["version"] == 1
    assert model["scorer"] == "compiled"
    assert len(model["sha256"]) == 64


def test_client_credentials_grant(server: Server, client_secret: str) -> None:
    response = httpx.post(
        f"{server.url}/token",
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
    ok = httpx.post(
        f"{server.url}/predict",
        json={"text": "great"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert ok.status_code == 200
    wrong = httpx.post(
        f"{server.url}/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "batch-job",
            "client_secret": "nope",
        },
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_metrics_are_labelled_by_version_and_variant(server: Server, http: httpx.Client) -> None:
    http.post("/predict", json={"text": "what a wonderful day"})
    text = httpx.get(f"{server.url}/metrics").text
    assert 'model_predictions_total{label="positive",model_version="1",variant="champion"}' in text
    assert 'http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'model_inference_duration_seconds_count{model_version="1",variant="champion"}' in text
    assert "model_prediction_confidence_bucket" in text
    assert "model_input_length_chars_bucket" in text
    assert 'model_info{model_version="1",scorer="compiled"' in text
    assert 'model_reloads_total{result="success",variant="champion"} 1.0' in text


def test_one_json_log_line_per_request_without_the_text(server: Server, http: httpx.Client) -> None:
    secret_text = "my very private complaint about seat 12C"
    response = http.post("/predict", json={"text": secret_text}, headers={"X-Request-ID": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    time.sleep(0.3)
    assert secret_text not in server.log_path.read_text()
    (line,) = [r for r in server.log_records() if r.get("request_id") == "req-42"]
    assert line["route"] == "/predict" and line["status"] == 200
    assert line["model_version"] == 1 and line["variant"] == "champion"
    assert line["latency_ms"] > 0


def test_auth_disabled_needs_no_token_and_warns(var: Path, tmp_path: Path) -> None:
    srv = Server(var, tmp_path / "open.log", auth_disabled="true", log_texts="true")
    try:
        srv.wait_ready()
        response = httpx.post(f"{srv.url}/predict", json={"text": "great crew"})
        assert response.status_code == 200
    finally:
        srv.stop()
    warnings = [r for r in srv.log_records() if r.get("level") == "warning"]
    assert any("DISABLED" in r["msg"] for r in warnings)
    logged = [r for r in srv.log_records() if r.get("route") == "/predict"]
    assert logged[0]["texts"] == ["great crew"], "texts are logged when the operator opts in"
