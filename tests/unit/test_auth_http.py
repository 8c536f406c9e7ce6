"""Through FastAPI: the bearer-token dependency `require_scope` and `POST /token` (`auth`)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import jwt
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from sentiment_mlops.config import Settings
from sentiment_mlops.serving.auth import require_scope, router
from sentiment_mlops.serving.clients import ClientStore, add_client
from sentiment_mlops.serving.deps import get_authenticator, get_clients, get_throttle
from sentiment_mlops.serving.throttle import TokenThrottle
from sentiment_mlops.serving.tokens import Authenticator, Principal

from .auth_setup import SECRET, UNKNOWN_ROOT, b64url, claims, settings


def make_app(authenticator: Authenticator, clients: ClientStore) -> FastAPI:
    app = FastAPI()
    throttle = TokenThrottle.from_settings(Settings())
    app.dependency_overrides[get_authenticator] = lambda: authenticator
    app.dependency_overrides[get_clients] = lambda: clients
    app.dependency_overrides[get_throttle] = lambda: throttle
    app.include_router(router)

    @app.get("/protected")
    async def protected(
        principal: Annotated[Principal, Depends(require_scope("predict"))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    return app


@pytest.fixture
def client_secret(tmp_path: Path) -> str:
    return add_client(tmp_path / "clients.json", "batch-job", ["predict", "feedback"])


@pytest.fixture
def http(hs256: Authenticator, tmp_path: Path, client_secret: str) -> Iterator[TestClient]:
    with TestClient(make_app(hs256, ClientStore.load(tmp_path / "clients.json"))) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_missing_bearer_token_is_401_with_challenge(http: TestClient) -> None:
    response = http.get("/protected")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "missing bearer token" in response.json()["detail"]


def test_non_bearer_authorization_is_401(http: TestClient) -> None:
    response = http.get("/protected", headers={"Authorization": "Basic YTpi"})
    assert response.status_code == 401
    assert "malformed" in response.json()["detail"]


def test_garbage_token_is_401_invalid_token(http: TestClient) -> None:
    response = http.get("/protected", headers=bearer("garbage"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json()["detail"].startswith("invalid token")


def test_expired_token_is_401_expired(http: TestClient) -> None:
    past = int(time.time()) - 3600
    token = jwt.encode(claims(iat=past, exp=past + 60), SECRET, algorithm="HS256")
    response = http.get("/protected", headers=bearer(token))
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_token_without_the_scope_is_403(http: TestClient, hs256: Authenticator) -> None:
    response = http.get("/protected", headers=bearer(hs256.mint("alice", ["feedback"])))
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="predict"'
    )
    assert "'predict'" in response.json()["detail"]


def test_valid_token_is_admitted(http: TestClient, hs256: Authenticator) -> None:
    response = http.get("/protected", headers=bearer(hs256.mint("alice", ["predict"])))
    assert response.status_code == 200
    assert response.json() == {"subject": "alice"}


def test_disabled_auth_admits_anonymous(tmp_path: Path, clean_env: None) -> None:
    authenticator = Authenticator.from_settings(settings(tmp_path, auth_disabled=True))
    with TestClient(make_app(authenticator, ClientStore())) as client:
        response = client.get("/protected")
    assert response.status_code == 200
    assert response.json() == {"subject": "anonymous"}


def test_unknown_scope_cannot_be_required() -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        require_scope("root")


def test_require_scope_uses_the_one_scope_check() -> None:
    with pytest.raises(ValueError, match=re.escape(UNKNOWN_ROOT)):
        require_scope("root")


def test_token_from_form_body_opens_the_protected_route(
    http: TestClient, client_secret: str
) -> None:
    response = http.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "batch-job",
            "client_secret": client_secret,
        },
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["scope"] == "feedback predict"
    assert body["expires_in"] == 3600
    assert http.get("/protected", headers=bearer(body["access_token"])).status_code == 200


def test_token_with_basic_auth_and_narrowed_scope(http: TestClient, client_secret: str) -> None:
    response = http.post(
        "/token",
        data={"grant_type": "client_credentials", "scope": "feedback"},
        auth=("batch-job", client_secret),
    )
    assert response.status_code == 200
    assert response.json()["scope"] == "feedback"
    token = response.json()["access_token"]
    assert http.get("/protected", headers=bearer(token)).status_code == 403


def grant_error(response: Any, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.json()["error_description"]


def test_wrong_secret_is_invalid_client(http: TestClient, client_secret: str) -> None:
    form = {"grant_type": "client_credentials", "client_id": "batch-job", "client_secret": "no"}
    grant_error(http.post("/token", data=form), 401, "invalid_client")
    response = http.post(
        "/token", data={"grant_type": "client_credentials"}, auth=("batch-job", "no")
    )
    grant_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")


def test_missing_client_credentials_is_invalid_client(http: TestClient) -> None:
    grant_error(
        http.post("/token", data={"grant_type": "client_credentials"}), 401, "invalid_client"
    )


def test_unsupported_grant_type(http: TestClient, client_secret: str) -> None:
    form = {"grant_type": "password", "client_id": "batch-job", "client_secret": client_secret}
    grant_error(http.post("/token", data=form), 400, "unsupported_grant_type")


def test_scope_beyond_the_clients_scopes_is_invalid_scope(
    http: TestClient, client_secret: str
) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": "batch-job",
        "client_secret": client_secret,
        "scope": "predict admin",
    }
    grant_error(http.post("/token", data=form), 400, "invalid_scope")


def test_verify_only_server_refuses_to_issue_tokens(
    tmp_path: Path, clean_env: None, client_secret: str, rsa_pem: tuple[str, str]
) -> None:
    verifier = Authenticator.from_settings(
        settings(tmp_path, jwt_algorithm="RS256", jwt_public_key=rsa_pem[1])
    )
    app = make_app(verifier, ClientStore.load(tmp_path / "clients.json"))
    with TestClient(app) as client:
        response = client.post(
            "/token", data={"grant_type": "client_credentials"}, auth=("batch-job", client_secret)
        )
    grant_error(response, 503, "temporarily_unavailable")


def test_credentials_in_both_basic_and_body_are_refused(
    http: TestClient, client_secret: str
) -> None:
    form = {"grant_type": "client_credentials", "client_secret": client_secret}
    response = http.post("/token", data=form, auth=("batch-job", client_secret))
    grant_error(response, 400, "invalid_request")


FORM = "application/x-www-form-urlencoded"


GRANT = b"grant_type=client_credentials"


@pytest.mark.parametrize(
    ("content", "headers", "status", "error"),
    [
        (b'{"grant_type": "x"}', {"Content-Type": "application/json"}, 400, "invalid_request"),
        (b"", {"Content-Type": FORM}, 400, "invalid_request"),
        (b"", {}, 400, "invalid_request"),
        (
            b"grant_type=client_credentials&client_id=%ff%fe",
            {"Content-Type": FORM},
            400,
            "invalid_request",
        ),
        (b"grant_type=\xff\xfe", {"Content-Type": FORM}, 400, "invalid_request"),
        (b"grant_type=a&grant_type=b", {"Content-Type": FORM}, 400, "invalid_request"),
        (b"client_id=" + b"x" * 100_000, {"Content-Type": FORM}, 400, "invalid_request"),
        (
            b"&".join(b"k%d=v" % i for i in range(100)),
            {"Content-Type": FORM},
            400,
            "invalid_request",
        ),
        (GRANT, {"Content-Type": FORM, "Authorization": "Basic %%"}, 401, "invalid_client"),
        (GRANT, {"Content-Type": FORM, "Authorization": "Bearer x"}, 401, "invalid_client"),
        (
            GRANT,
            {"Content-Type": FORM, "Authorization": "Basic " + b64url(b"\xff:\xfe")},
            401,
            "invalid_client",
        ),
    ],
)
def test_malformed_token_requests_are_client_errors(
    http: TestClient, content: bytes, headers: dict[str, str], status: int, error: str
) -> None:
    grant_error(http.post("/token", content=content, headers=headers), status, error)


def test_token_route_is_documented_as_a_form(http: TestClient) -> None:
    schema = http.get("/openapi.json").json()
    body = schema["paths"]["/token"]["post"]["requestBody"]["content"]
    assert body[FORM]["schema"]["required"] == ["grant_type"]
    scheme = schema["components"]["securitySchemes"]["OAuth2ClientCredentials"]
    assert scheme["flows"]["clientCredentials"]["tokenUrl"] == "token"
    assert schema["paths"]["/protected"]["get"]["security"] == [
        {"OAuth2ClientCredentials": ["predict"]}
    ]
