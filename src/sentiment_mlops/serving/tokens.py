"""Access tokens: the scopes they grant, the keys that sign them, and minting and verifying them.

HS256 signs with one shared secret (`SENTIMENT_JWT_SECRET`, or a development secret generated
once under `SENTIMENT_VAR_DIR`); RS256 lets other services verify tokens with the public key
alone. `check_scopes` is the one place scope names are validated, for tokens, OAuth2 clients
and protected routes alike.

This module knows nothing of HTTP or of OAuth2 clients: it must not import FastAPI or Starlette
(`serving.auth` is the HTTP face) nor `serving.clients` (which builds on this module).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from sentiment_mlops.config import MAX_TOKEN_TTL_SECONDS, Settings
from sentiment_mlops.serving.private_files import generated_secret

SCOPE_DESCRIPTIONS = {
    "predict": "Ask for predictions",
    "feedback": "Report the true label of a past prediction",
    "admin": "Reload models and other operations",
}
SCOPES: frozenset[str] = frozenset(SCOPE_DESCRIPTIONS)
LEEWAY_SECONDS = 10
MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
# NumericDate claims: PyJWT accepts anything `int()` takes ("123", 1e308, true); we want integers.
_TIME_CLAIMS = ("exp", "iat", "nbf")
# Verified tokens remembered until they expire: a client reuses its token for many requests,
# and an HS256 check is about a seventh of a /predict request's CPU time.
_VERIFIED_CACHE_SIZE = 4096


class AuthConfigError(ValueError):
    """Auth settings or files cannot work as given; the message names the setting and the fix."""


class AuthError(Exception):
    """A presented token is not accepted; the message is safe to show to the caller."""


class InvalidToken(AuthError):
    """Malformed, badly signed, for another issuer or audience, or missing required claims."""


class ExpiredToken(AuthError):
    """Well-formed and correctly signed, but past its `exp`."""


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """`scopes` as a set, or ValueError naming the unknown ones and the known ones.

    The one scope check, for tokens, OAuth2 clients and protected routes alike. One string is
    refused with TypeError: iterating it would check its letters, not the scope it names.
    """
    if isinstance(scopes, str):
        raise TypeError("scopes must be a collection of scope names, not one string")
    granted = frozenset(scopes)
    unknown = granted - SCOPES
    if unknown:
        raise ValueError(f"unknown scope(s) {sorted(unknown, key=str)}; known: {sorted(SCOPES)}")
    return granted


@dataclass(frozen=True)
class Principal:
    """The caller a verified token speaks for, and what it may do."""

    subject: str
    scopes: frozenset[str]
    expires_at: datetime | None


ANONYMOUS = Principal(subject="anonymous", scopes=SCOPES, expires_at=None)


@dataclass(frozen=True)
class SigningKeys:
    """Keys for one algorithm; `signing_key` is None when this process may only verify."""

    algorithm: Literal["HS256", "RS256"]
    signing_key: str | RSAPrivateKey | None = field(repr=False)
    verification_key: str | RSAPublicKey = field(repr=False)
    is_dev_secret: bool = False


def signing_keys(settings: Settings) -> SigningKeys:
    """Resolve the configured keys once, failing early with a message that says what to set."""
    if settings.jwt_algorithm == "RS256":
        return _rsa_keys(settings)
    if settings.jwt_secret is not None:
        secret, source = settings.jwt_secret.get_secret_value(), "SENTIMENT_JWT_SECRET"
    else:
        secret, source = _dev_secret(settings.dev_secret_file()), str(settings.dev_secret_file())
    size = len(secret.encode("utf-8"))
    if size < MIN_SECRET_BYTES:
        raise AuthConfigError(
            f"{source} is {size} bytes; HS256 needs at least {MIN_SECRET_BYTES}. Generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
        )
    return SigningKeys("HS256", secret, secret, is_dev_secret=settings.jwt_secret is None)


def _dev_secret(path: Path) -> str:
    """The development secret in `path`; the first process to create it wins, others reuse it."""
    try:
        return generated_secret(path)
    except OSError as exc:
        raise AuthConfigError(
            f"cannot create or read the development secret {path} ({exc}); "
            "set SENTIMENT_JWT_SECRET or make SENTIMENT_VAR_DIR writable"
        ) from exc


def _rsa_keys(settings: Settings) -> SigningKeys:
    private_pem = settings.jwt_private_key.get_secret_value() if settings.jwt_private_key else None
    public_pem = settings.jwt_public_key
    private = _load_private_pem(private_pem) if private_pem else None
    if public_pem:
        public = _load_public_pem(public_pem)
    elif private is not None:
        public = private.public_key()
    else:
        raise AuthConfigError(
            "RS256 needs SENTIMENT_JWT_PRIVATE_KEY (PEM; to mint and verify) or "
            "SENTIMENT_JWT_PUBLIC_KEY (PEM; to verify only)"
        )
    if private is not None and private.public_key().public_numbers() != public.public_numbers():
        raise AuthConfigError(
            "SENTIMENT_JWT_PUBLIC_KEY is not the public half of SENTIMENT_JWT_PRIVATE_KEY; "
            "set the matching pair, or only the private key"
        )
    if public.key_size < MIN_RSA_BITS:
        raise AuthConfigError(
            f"the RSA key has {public.key_size} bits; RS256 needs at least {MIN_RSA_BITS}"
        )
    return SigningKeys("RS256", private, public)


def _load_private_pem(pem: str) -> RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise AuthConfigError(_pem_problem("SENTIMENT_JWT_PRIVATE_KEY", "private", exc)) from exc
    if not isinstance(key, RSAPrivateKey):
        raise AuthConfigError("SENTIMENT_JWT_PRIVATE_KEY must be an RSA key for RS256")
    return key


def _load_public_pem(pem: str) -> RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise AuthConfigError(_pem_problem("SENTIMENT_JWT_PUBLIC_KEY", "public", exc)) from exc
    if not isinstance(key, RSAPublicKey):
        raise AuthConfigError("SENTIMENT_JWT_PUBLIC_KEY must be an RSA key for RS256")
    return key


def _pem_problem(setting: str, kind: str, exc: Exception) -> str:
    return f"{setting} is not an unencrypted PEM {kind} key (with real line breaks): {exc}"


class Authenticator:
    """Mints and verifies the API's access tokens with one algorithm and its keys."""

    def __init__(
        self,
        keys: SigningKeys,
        *,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        disabled: bool = False,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._ttl_seconds = ttl_seconds
        self._disabled = disabled
        self._verified: dict[str, Principal] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """The server's authenticator; keys are resolved now so bad settings fail at startup."""
        return cls(
            signing_keys(settings),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_seconds=settings.token_ttl_seconds,
            disabled=settings.auth_disabled,
        )

    @property
    def disabled(self) -> bool:
        """Requests are admitted without tokens (local work only)."""
        return self._disabled

    @property
    def is_dev_secret(self) -> bool:
        """Tokens are signed with the generated development secret, worth a warning in logs."""
        return self._keys.is_dev_secret

    @property
    def can_mint(self) -> bool:
        """False for an RS256 verifier that was given only the public key."""
        return self._keys.signing_key is not None

    @property
    def ttl_seconds(self) -> int:
        """Lifetime of tokens minted without an explicit one."""
        return self._ttl_seconds

    def mint(self, subject: str, scopes: Iterable[str], ttl_seconds: int | None = None) -> str:
        """A signed token for `subject` granting `scopes`, valid for `ttl_seconds`."""
        granted = check_scopes(scopes)
        if not subject.strip():
            raise ValueError("the token subject must not be empty")
        ttl = self._ttl_seconds if ttl_seconds is None else ttl_seconds
        if ttl <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl}")
        if ttl > MAX_TOKEN_TTL_SECONDS:
            raise ValueError(
                f"ttl_seconds {ttl} exceeds the maximum of {MAX_TOKEN_TTL_SECONDS} "
                f"({MAX_TOKEN_TTL_SECONDS // 86400} days); mint a shorter-lived token"
            )
        if self._keys.signing_key is None:
            raise AuthConfigError(
                "minting RS256 tokens needs SENTIMENT_JWT_PRIVATE_KEY; with only the public key "
                "this server can verify tokens but not issue them"
            )
        now = int(time.time())
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "iat": now,
            "exp": now + ttl,
            "scope": " ".join(sorted(granted)),
        }
        return jwt.encode(claims, self._keys.signing_key, algorithm=self._keys.algorithm)

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; raises `ExpiredToken` or `InvalidToken` otherwise."""
        cached = self._verified.get(token)
        if cached is not None and cached.expires_at is not None:
            if cached.expires_at.timestamp() > time.time():
                return cached
            self._verified.pop(token, None)
        principal = self._decode(token)
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = principal
        return principal

    def _decode(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._keys.verification_key,
                algorithms=[self._keys.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise ExpiredToken("token expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from exc
        for name in _TIME_CLAIMS:
            value = claims.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidToken(
                    f"invalid token: the {name} claim must be an integer (seconds since 1970)"
                )
        exp: int = claims["exp"]
        if exp > time.time() + MAX_TOKEN_TTL_SECONDS + LEEWAY_SECONDS:
            raise InvalidToken(
                f"invalid token: exp lies more than {MAX_TOKEN_TTL_SECONDS} s "
                f"({MAX_TOKEN_TTL_SECONDS // 86400} days) ahead, longer than any token lives"
            )
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip():
            # `mint` refuses such a subject: a token carrying one was not made here, and an
            # empty subject would share one identity (rate limits, routing) with every other.
            raise InvalidToken("invalid token: the sub claim must be a non-empty string")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise InvalidToken("invalid token: the scope claim must be a space-separated string")
        return Principal(
            subject=subject,
            scopes=frozenset(scope.split()),
            expires_at=datetime.fromtimestamp(exp, UTC),
        )
