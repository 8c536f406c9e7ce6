"""Scopes, signing keys, and minting and verifying access tokens (`serving.tokens`)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sentiment_mlops.config import MAX_TOKEN_TTL_SECONDS
from sentiment_mlops.serving import tokens
from sentiment_mlops.serving.tokens import (
    LEEWAY_SECONDS,
    SCOPES,
    AuthConfigError,
    Authenticator,
    ExpiredToken,
    InvalidToken,
    check_scopes,
    signing_keys,
)

from .auth_setup import SECRET, UNKNOWN_ROOT, b64url, claims, settings


def test_known_scopes() -> None:
    assert {"predict", "feedback", "admin"} == SCOPES


def test_check_scopes_returns_the_set_or_names_unknown_and_known_scopes() -> None:
    assert check_scopes(["predict", "admin", "predict"]) == frozenset({"predict", "admin"})
    assert check_scopes(iter([])) == frozenset()
    with pytest.raises(ValueError) as caught:
        check_scopes(["predict", "root"])
    assert str(caught.value) == UNKNOWN_ROOT
    with pytest.raises(TypeError, match="not one string"):
        check_scopes("predict")


def test_mint_uses_the_one_scope_check(hs256: Authenticator) -> None:
    with pytest.raises(ValueError, match=re.escape(UNKNOWN_ROOT)):
        hs256.mint("alice", ["predict", "root"])


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


def test_token_not_yet_valid_beyond_the_leeway_is_rejected(hs256: Authenticator) -> None:
    now = int(time.time())
    early = jwt.encode(claims(iat=now, nbf=now + LEEWAY_SECONDS + 60), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match=r"not yet valid \(nbf\)"):
        hs256.verify(early)
    with pytest.raises(InvalidToken, match="nbf"):
        hs256.verify(early)  # and the refusal is not cached as a success
    skewed = jwt.encode(claims(iat=now, nbf=now + 2), SECRET, algorithm="HS256")
    assert hs256.verify(skewed).subject == "alice", "within the clock skew leeway"


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
        ({"sub": ""}, "sub claim must be a non-empty string"),
        ({"sub": "   "}, "sub claim must be a non-empty string"),
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
    with pytest.raises(ValueError, match="subject"):
        hs256.mint("  ", ["predict"])
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


# Claims as functions of the time the test runs (not of collection time, minutes earlier).
TIME_CLAIMS: list[tuple[Callable[[int], dict[str, Any]], str]] = [
    (lambda now: {"exp": 10**13}, "exp lies more than"),
    (lambda now: {"exp": 2**63}, "exp lies more than"),
    (lambda now: {"exp": now + MAX_TOKEN_TTL_SECONDS + LEEWAY_SECONDS + 60}, "exp lies"),
    (lambda now: {"exp": 1e308}, "exp claim must be an integer"),
    (lambda now: {"exp": float(now + 60)}, "exp claim must be an integer"),
    (lambda now: {"exp": str(now + 60)}, "exp claim must be an integer"),
    (lambda now: {"iat": True}, "iat claim must be an integer"),
    (lambda now: {"iat": str(now)}, "iat claim must be an integer"),
    (lambda now: {"iat": 1.5}, "iat claim must be an integer"),
    (lambda now: {"nbf": "0"}, "nbf claim must be an integer"),
]


@pytest.mark.parametrize(("overrides", "message"), TIME_CLAIMS)
def test_far_future_or_non_integer_times_are_invalid_not_a_crash(
    hs256: Authenticator, overrides: Callable[[int], dict[str, Any]], message: str
) -> None:
    """`datetime.fromtimestamp` overflowed on such an `exp`, a 500 for every request."""
    token = jwt.encode(claims(**overrides(int(time.time()))), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match=message):
        hs256.verify(token)
    with pytest.raises(InvalidToken, match=message):
        hs256.verify(token)  # and the refusal is not cached as a success


def test_the_longest_lived_token_is_accepted(hs256: Authenticator) -> None:
    principal = hs256.verify(hs256.mint("svc", ["predict"], ttl_seconds=MAX_TOKEN_TTL_SECONDS))
    assert principal.expires_at is not None


def test_mint_refuses_absurd_lifetimes(hs256: Authenticator) -> None:
    with pytest.raises(ValueError, match=f"exceeds the maximum of {MAX_TOKEN_TTL_SECONDS}"):
        hs256.mint("alice", ["predict"], ttl_seconds=10**12)
    with pytest.raises(ValueError, match="exceeds the maximum"):
        hs256.mint("alice", ["predict"], ttl_seconds=MAX_TOKEN_TTL_SECONDS + 1)


def test_settings_refuse_a_default_lifetime_beyond_the_maximum(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="token_ttl_seconds"):
        settings(tmp_path, token_ttl_seconds=MAX_TOKEN_TTL_SECONDS + 1)
