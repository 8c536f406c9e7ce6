"""Tokens, keys, OAuth2 clients, and the FastAPI dependency and /token route built on them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from sentiment_mlops.config import Settings
from sentiment_mlops.serving import tokens
from sentiment_mlops.serving.auth import require_scope, router
from sentiment_mlops.serving.clients import ClientStore, add_client
from sentiment_mlops.serving.tokens import (
    LEEWAY_SECONDS,
    SCOPES,
    AuthConfigError,
    Authenticator,
    ExpiredToken,
    InvalidToken,
    Principal,
    signing_keys,
)

SECRET = "s" * 48
ISSUER, AUDIENCE = "sentiment-mlops", "sentiment-api"


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"var_dir": tmp_path, "jwt_secret": SECRET} | overrides
    return Settings(**values)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "exp": now + 60,
        "scope": "predict",
    } | overrides


@pytest.fixture(scope="module")
def rsa_pem() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture
def hs256(tmp_path: Path, clean_env: None) -> Authenticator:
    return Authenticator.from_settings(settings(tmp_path))


def test_hs256_round_trip(hs256: Authenticator) -> None:
    principal = hs256.verify(hs256.mint("alice", ["predict", "feedback"], ttl_seconds=60))
    assert principal.subject == "alice"
    assert principal.scopes == {"predict", "feedback"}
    assert principal.expires_at is not None
    assert 50 < principal.expires_at.timestamp() - time.time() <= 60


def test_rs256_round_trip_and_verify_only_with_public_key(
    tmp_path: Path, clean_env: None, rsa_pem: tuple[str, str]
) -> None:
    private, public = rsa_pem
    issuer = Authenticator.from_settings(
        settings(tmp_path, jwt_algorithm="RS256", jwt_private_key=private)
    )
    token = issuer.mint("alice", ["admin"])
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert issuer.verify(token).scopes == {"admin"}
    verifier = Authenticator.from_settings(
        settings(tmp_path, jwt_algorithm="RS256", jwt_public_key=public)
    )
    assert verifier.verify(token).subject == "alice"
    assert not verifier.can_mint
    with pytest.raises(AuthConfigError, match="SENTIMENT_JWT_PRIVATE_KEY"):
        verifier.mint("alice", ["admin"])


def test_rs256_without_keys_or_with_a_mismatched_pair_is_a_config_error(
    tmp_path: Path, clean_env: None, rsa_pem: tuple[str, str]
) -> None:
    with pytest.raises(AuthConfigError, match="RS256 needs"):
        signing_keys(settings(tmp_path, jwt_algorithm="RS256"))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    other_pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    mismatched = settings(
        tmp_path, jwt_algorithm="RS256", jwt_private_key=rsa_pem[0], jwt_public_key=other_pem
    )
    with pytest.raises(AuthConfigError, match="not the public half"):
        signing_keys(mismatched)
    with pytest.raises(AuthConfigError, match="not an unencrypted PEM"):
        signing_keys(settings(tmp_path, jwt_algorithm="RS256", jwt_public_key="nope"))


def test_expired_token_is_rejected_as_expired(hs256: Authenticator) -> None:
    past = int(time.time()) - 3600
    token = jwt.encode(claims(iat=past, exp=past + 60), SECRET, algorithm="HS256")
    with pytest.raises(ExpiredToken, match="token expired"):
        hs256.verify(token)


def test_token_within_clock_skew_leeway_is_accepted(hs256: Authenticator) -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 2), SECRET, algorithm="HS256")
    assert hs256.verify(token).subject == "alice"


def test_wrong_signature_is_rejected(hs256: Authenticator) -> None:
    token = jwt.encode(claims(), "t" * 48, algorithm="HS256")
    with pytest.raises(InvalidToken, match=r"[Ss]ignature verification failed"):
        hs256.verify(token)


def test_alg_none_is_rejected(hs256: Authenticator) -> None:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims()).encode())
    with pytest.raises(InvalidToken, match="alg"):
        hs256.verify(f"{header}.{payload}.")


def test_hs256_signed_with_the_public_key_is_rejected_by_rs256(
    tmp_path: Path, clean_env: None, rsa_pem: tuple[str, str]
) -> None:
    verifier = Authenticator.from_settings(
        settings(tmp_path, jwt_algorithm="RS256", jwt_public_key=rsa_pem[1])
    )
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims(scope="admin")).encode())
    signature = hmac.new(rsa_pem[1].encode(), f"{header}.{payload}".encode(), hashlib.sha256)
    with pytest.raises(InvalidToken, match="alg"):
        verifier.verify(f"{header}.{payload}.{b64url(signature.digest())}")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"aud": "another-api"}, "[Aa]udience"),
        ({"iss": "someone-else"}, "[Ii]ssuer"),
        ({"exp": None}, "exp"),
        ({"sub": None}, "sub"),
        ({"scope": ["predict"]}, "scope"),
    ],
)
def test_wrong_or_missing_claims_are_rejected(
    hs256: Authenticator, overrides: dict[str, Any], message: str
) -> None:
    payload = {k: v for k, v in claims(**overrides).items() if v is not None}
    with pytest.raises(InvalidToken, match=message):
        hs256.verify(jwt.encode(payload, SECRET, algorithm="HS256"))


def test_garbage_is_an_invalid_token(hs256: Authenticator) -> None:
    with pytest.raises(InvalidToken, match="invalid token"):
        hs256.verify("not.a.token")


def test_mint_rejects_unknown_scopes_and_bad_arguments(hs256: Authenticator) -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        hs256.mint("alice", ["predict", "root"])
    with pytest.raises(TypeError, match="not one string"):
        hs256.mint("alice", "predict")
    with pytest.raises(ValueError, match="subject"):
        hs256.mint("", ["predict"])
    with pytest.raises(ValueError, match="ttl_seconds"):
        hs256.mint("alice", ["predict"], ttl_seconds=0)


def test_short_secret_is_rejected(tmp_path: Path, clean_env: None) -> None:
    with pytest.raises(AuthConfigError, match="SENTIMENT_JWT_SECRET is 31 bytes"):
        signing_keys(settings(tmp_path, jwt_secret="x" * 31))


def test_dev_secret_is_generated_once_private_and_reused(tmp_path: Path, clean_env: None) -> None:
    config = settings(tmp_path / "nested" / "var", jwt_secret=None)
    first = Authenticator.from_settings(config)
    assert first.is_dev_secret
    path = config.dev_secret_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) >= 64
    second = Authenticator.from_settings(config)
    assert second.verify(first.mint("alice", ["predict"])).subject == "alice"
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_unwritable_dev_secret_location_is_a_config_error(tmp_path: Path, clean_env: None) -> None:
    (tmp_path / "not-a-dir").write_text("")
    with pytest.raises(AuthConfigError, match="SENTIMENT_JWT_SECRET"):
        signing_keys(settings(tmp_path / "not-a-dir", jwt_secret=None))


def test_configured_secret_is_not_a_dev_secret(hs256: Authenticator, tmp_path: Path) -> None:
    assert not hs256.is_dev_secret
    assert not (tmp_path / "dev_jwt_secret").exists()


def test_racing_threads_share_one_dev_secret(tmp_path: Path, clean_env: None) -> None:
    config = settings(tmp_path, jwt_secret=None)
    barrier = threading.Barrier(8)
    secrets_seen: list[object] = []

    def resolve() -> None:
        barrier.wait()
        secrets_seen.append(signing_keys(config).signing_key)

    threads = [threading.Thread(target=resolve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(secrets_seen) == 8
    assert len(set(secrets_seen)) == 1


_RACE = """
import hashlib, sys, time
from pathlib import Path
from sentiment_mlops.config import Settings
from sentiment_mlops.serving.tokens import signing_keys
go = Path(sys.argv[1]) / "go"
while not go.exists():
    time.sleep(0.001)
key = signing_keys(Settings(var_dir=Path(sys.argv[1]) / "var")).signing_key
print(hashlib.sha256(key.encode()).hexdigest())
"""


def test_racing_processes_share_one_dev_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    time.sleep(0.5)
    (tmp_path / "go").touch()
    digests = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    expected = hashlib.sha256((tmp_path / "var" / "dev_jwt_secret").read_text().strip().encode())
    assert digests == {expected.hexdigest()}


def test_client_store_authenticates_only_the_right_secret(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    secret = add_client(path, "batch-job", ["predict", "feedback"])
    store = ClientStore.load(path)
    assert len(store) == 1
    assert store.authenticate("batch-job", secret) == {"predict", "feedback"}
    assert store.authenticate("batch-job", secret + "x") is None
    assert store.authenticate("nobody", secret) is None


def test_clients_file_holds_only_hashes_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "var" / "clients.json"
    first = add_client(path, "a", ["predict"])
    second = add_client(path, "b", ["admin"])
    text = path.read_text()
    assert first not in text
    assert second not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(text)
    assert document["clients"]["a"]["scopes"] == ["predict"]
    assert document["clients"]["b"]["secret_hash"].startswith("scrypt$16384$8$1$")


def test_adding_a_client_again_replaces_its_secret(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    old = add_client(path, "a", ["predict"])
    new = add_client(path, "a", ["predict", "admin"])
    store = ClientStore.load(path)
    assert store.authenticate("a", old) is None
    assert store.authenticate("a", new) == {"predict", "admin"}


def test_add_client_validates_its_input(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    with pytest.raises(ValueError, match="client id"):
        add_client(path, "has space", ["predict"])
    with pytest.raises(ValueError, match="unknown scope"):
        add_client(path, "a", ["root"])
    with pytest.raises(ValueError, match="at least one scope"):
        add_client(path, "a", [])
    assert not path.exists()


def test_missing_clients_file_means_no_clients(tmp_path: Path) -> None:
    assert len(ClientStore.load(tmp_path / "absent.json")) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "expected"),
        ('{"clients": {"a": {"secret_hash": "plain", "scopes": ["predict"]}}}', "client 'a'"),
        ('{"clients": {"a": {"secret_hash": "scrypt$3$8$1$AA==$AA==", "scopes": []}}}', "'a'"),
        ('{"clients": {"a": []}}', "client 'a'"),
    ],
)
def test_malformed_clients_file_is_a_config_error(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "clients.json"
    path.write_text(content)
    with pytest.raises(AuthConfigError, match=message):
        ClientStore.load(path)


def test_unknown_scope_in_clients_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    add_client(path, "a", ["predict"])
    document = json.loads(path.read_text())
    document["clients"]["a"]["scopes"] = ["root"]
    path.write_text(json.dumps(document))
    with pytest.raises(AuthConfigError, match="unknown scope"):
        ClientStore.load(path)


def test_known_scopes() -> None:
    assert {"predict", "feedback", "admin"} == SCOPES


# Through FastAPI


def make_app(authenticator: Authenticator, clients: ClientStore) -> FastAPI:
    app = FastAPI()
    app.state.auth = authenticator
    app.state.clients = clients
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


def test_cached_verification_still_honours_expiry(
    hs256: Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = hs256.mint("svc", ["predict"], ttl_seconds=60)
    first = hs256.verify(token)
    assert hs256.verify(token) is first  # served from the cache
    later = time.time() + 60 + LEEWAY_SECONDS + 1

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Later:  # type: ignore[override]
            return cls.fromtimestamp(later, tz)

    monkeypatch.setattr(tokens.time, "time", lambda: later)
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)
    with pytest.raises(ExpiredToken):
        hs256.verify(token)


def test_cache_does_not_accept_a_tampered_copy_of_a_verified_token(hs256: Authenticator) -> None:
    token = hs256.mint("svc", ["predict"])
    hs256.verify(token)
    head, _, signature = token.split(".")
    forged = f"{head}.{b64url(json.dumps(claims(scope='predict admin')).encode())}.{signature}"
    with pytest.raises(InvalidToken):
        hs256.verify(forged)


def test_client_store_picks_up_clients_added_while_running(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    store = ClientStore.load(path)
    assert len(store) == 0
    secret = add_client(path, "late-joiner", ["predict"])
    assert store.authenticate("late-joiner", secret) == {"predict"}
    path.write_text("not json")
    assert store.authenticate("late-joiner", secret) == {"predict"}, "a broken file keeps the old"
