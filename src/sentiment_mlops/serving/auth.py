"""Who may call the API: JWT bearer tokens, their scopes, and the OAuth2 client-credentials grant.

Clients listed in the clients file (secrets stored as scrypt hashes only) trade their id and
secret for a short-lived token at `POST /token`; protected routes check that token with
`require_scope`. HS256 signs with one shared secret; RS256 lets other services verify tokens
with the public key alone.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote_plus

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from fastapi import APIRouter, HTTPException, Request, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from sentiment_mlops.config import Settings

_SCOPE_DESCRIPTIONS = {
    "predict": "Ask for predictions",
    "feedback": "Report the true label of a past prediction",
    "admin": "Reload models and other operations",
}
log = logging.getLogger("sentiment_mlops.serving.auth")

SCOPES: frozenset[str] = frozenset(_SCOPE_DESCRIPTIONS)
LEEWAY_SECONDS = 10
MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
# Verified tokens remembered until they expire: a client reuses its token for many requests,
# and an HS256 check is about a seventh of a /predict request's CPU time.
_VERIFIED_CACHE_SIZE = 4096
_CLIENT_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")

# scrypt cost: about 30 ms and 16 MiB per hash, so /token stays cheap but guessing does not.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_SCRYPT_DKLEN = 32

_MAX_FORM_BYTES = 8192
_MAX_FORM_FIELDS = 16


class AuthConfigError(ValueError):
    """Auth settings or files cannot work as given; the message names the setting and the fix."""


class AuthError(Exception):
    """A presented token is not accepted; the message is safe to show to the caller."""


class InvalidToken(AuthError):
    """Malformed, badly signed, for another issuer or audience, or missing required claims."""


class ExpiredToken(AuthError):
    """Well-formed and correctly signed, but past its `exp`."""


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
        if not path.exists():
            _write_private_file(path, secrets.token_urlsafe(48) + "\n", replace=False)
        return path.read_text(encoding="utf-8").strip()
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
        if isinstance(scopes, str):
            raise TypeError("scopes must be a collection of scope names, not one string")
        granted = frozenset(scopes)
        unknown = granted - SCOPES
        if unknown:
            raise ValueError(f"unknown scope(s) {sorted(unknown)}; known: {sorted(SCOPES)}")
        if not subject:
            raise ValueError("the token subject must not be empty")
        ttl = self._ttl_seconds if ttl_seconds is None else ttl_seconds
        if ttl <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl}")
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
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise InvalidToken("invalid token: the scope claim must be a space-separated string")
        return Principal(
            subject=claims["sub"],
            scopes=frozenset(scope.split()),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )


@dataclass(frozen=True)
class _ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def new(cls, secret: str) -> _ScryptHash:
        salt = secrets.token_bytes(16)
        blank = cls(_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, salt, b"")
        return cls(_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, salt, blank._derive(secret, _SCRYPT_DKLEN))

    @classmethod
    def parse(cls, encoded: str) -> _ScryptHash:
        """Raises ValueError unless `encoded` is `scrypt$n$r$p$salt$hash` that hashlib accepts."""
        parts = encoded.split("$")
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError("expected scrypt$<n>$<r>$<p>$<salt base64>$<hash base64>")
        n, r, p = (int(part) for part in parts[1:4])
        salt, digest = (base64.b64decode(part, validate=True) for part in parts[4:])
        # OpenSSL's limits: n a power of two above 1, and memory 128*r*(n+p+2) within maxmem.
        if n < 2 or n & (n - 1) or r < 1 or p < 1 or 128 * r * (n + p + 2) > _SCRYPT_MAXMEM:
            raise ValueError(f"scrypt parameters n={n} r={r} p={p} are out of range")
        if len(salt) < 16 or len(digest) < 16:
            raise ValueError("salt and hash must be at least 16 bytes each")
        return cls(n, r, p, salt, digest)

    def encode(self) -> str:
        salt, digest = (base64.b64encode(part).decode() for part in (self.salt, self.digest))
        return f"scrypt${self.n}${self.r}${self.p}${salt}${digest}"

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self._derive(secret, len(self.digest)), self.digest)

    def _derive(self, secret: str, dklen: int) -> bytes:
        return hashlib.scrypt(
            secret.encode("utf-8"),
            salt=self.salt,
            n=self.n,
            r=self.r,
            p=self.p,
            maxmem=_SCRYPT_MAXMEM,
            dklen=dklen,
        )


# Checked against unknown client ids so a wrong id costs as much time as a wrong secret.
_DUMMY_HASH = _ScryptHash(_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, bytes(16), bytes(_SCRYPT_DKLEN))


@dataclass(frozen=True)
class Client:
    """An OAuth2 client: the scopes it may obtain and the scrypt hash of its secret."""

    scopes: frozenset[str]
    secret_hash: str = field(repr=False)

    def __post_init__(self) -> None:
        _ScryptHash.parse(self.secret_hash)
        unknown = self.scopes - SCOPES
        if unknown:
            raise ValueError(f"unknown scope(s) {sorted(unknown)}; known: {sorted(SCOPES)}")


class ClientStore:
    """The clients allowed to use `POST /token`, re-read when their file changes, so a
    client added with `sentiment token add-client` works without a restart."""

    def __init__(self, clients: Mapping[str, Client] | None = None, path: Path | None = None):
        self._clients = dict(clients or {})
        self._path = path
        self._stamp = _file_stamp(path)

    @classmethod
    def load(cls, path: Path) -> ClientStore:
        """Clients from the JSON file at `path`; a missing file means no clients."""
        return cls(_read_clients(path), path)

    def __len__(self) -> int:
        return len(self._clients)

    def _refresh(self) -> None:
        if self._path is None or (stamp := _file_stamp(self._path)) == self._stamp:
            return
        try:
            self._clients = _read_clients(self._path)
        except AuthConfigError as exc:  # keep the clients we had rather than lock everyone out
            log.error("cannot reload OAuth2 clients", extra={"error": str(exc)})
            return
        self._stamp = stamp

    def authenticate(self, client_id: str, secret: str) -> frozenset[str] | None:
        """The client's scopes if `secret` is its secret, else None (in about constant time)."""
        self._refresh()
        client = self._clients.get(client_id)
        if client is None:
            _DUMMY_HASH.matches(secret)
            return None
        return client.scopes if _ScryptHash.parse(client.secret_hash).matches(secret) else None


def _file_stamp(path: Path | None) -> tuple[int, int] | None:
    try:
        stat = path.stat() if path is not None else None
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size) if stat is not None else None


def add_client(path: Path, client_id: str, scopes: Iterable[str]) -> str:
    """Register (or re-key) a client and return its new secret: the only time it is visible."""
    if not _CLIENT_ID.fullmatch(client_id):
        raise ValueError(
            f"client id {client_id!r} must be 1-128 characters of letters, digits and . _ ~ -"
        )
    if isinstance(scopes, str):
        raise TypeError("scopes must be a collection of scope names, not one string")
    granted = frozenset(scopes)
    if not granted:
        raise ValueError(f"a client needs at least one scope of {sorted(SCOPES)}")
    clients = _read_clients(path)
    secret = secrets.token_urlsafe(32)
    clients[client_id] = Client(granted, _ScryptHash.new(secret).encode())
    document = {
        "clients": {
            name: {"secret_hash": client.secret_hash, "scopes": sorted(client.scopes)}
            for name, client in sorted(clients.items())
        }
    }
    _write_private_file(path, json.dumps(document, indent=2) + "\n", replace=True)
    return secret


def _read_clients(path: Path) -> dict[str, Client]:
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthConfigError(f"{path}: not valid JSON: {exc}") from exc
    entries = document.get("clients") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        raise AuthConfigError(f'{path}: expected {{"clients": {{"<client id>": {{...}}}}}}')
    clients = {}
    for client_id, entry in entries.items():
        try:
            if not isinstance(entry, dict) or not isinstance(entry.get("scopes"), list):
                raise ValueError('expected {"secret_hash": "scrypt$...", "scopes": [...]}')
            clients[client_id] = Client(frozenset(entry["scopes"]), str(entry.get("secret_hash")))
        except (ValueError, TypeError) as exc:
            raise AuthConfigError(f"{path}: client {client_id!r}: {exc}") from exc
    return clients


def _write_private_file(path: Path, text: str, *, replace: bool) -> None:
    """Write `text` to `path` whole and readable by its owner only.

    With `replace=False` an existing file is kept: the hard link fails if another process
    linked its own file first, so concurrent writers all end up reading the same content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


_oauth2 = OAuth2(
    flows=OAuthFlows(
        clientCredentials=OAuthFlowClientCredentials(tokenUrl="token", scopes=_SCOPE_DESCRIPTIONS)
    ),
    scheme_name="OAuth2ClientCredentials",
    description="Get a token from POST /token and send it as `Authorization: Bearer <token>`.",
    auto_error=False,
)

def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting requests whose bearer token grants `scope`, returning its principal.

    The authenticator is read from `request.app.state.auth`, so tests and the app factory
    decide the keys; when auth is disabled every request is the all-scopes `ANONYMOUS`.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known: {sorted(SCOPES)}")

    # A default, not Annotated: annotations are strings here and FastAPI resolves them in the
    # module's globals, where the closure's `scope` does not exist.
    async def dependency(
        request: Request, authorization: str | None = Security(_oauth2, scopes=[scope])
    ) -> Principal:
        authenticator: Authenticator = request.app.state.auth
        if authenticator.disabled:
            return ANONYMOUS
        kind, _, token = (authorization or "").partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            problem = "missing bearer token" if authorization is None else "malformed header"
            raise HTTPException(
                status_code=401,
                detail=f"{problem}: send 'Authorization: Bearer <token>' (get one: POST /token)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            principal = authenticator.verify(token.strip())
        except AuthError as exc:
            raise HTTPException(
                status_code=401,
                detail=str(exc),
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from exc
        if scope not in principal.scopes:
            raise HTTPException(
                status_code=403,
                detail=f"the token lacks the {scope!r} scope this operation needs",
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )
        return principal

    return dependency


class TokenResponse(BaseModel):
    """A successful client-credentials grant (RFC 6749 §5.1)."""

    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    scope: str


class OAuthErrorResponse(BaseModel):
    """A refused grant (RFC 6749 §5.2)."""

    error: str
    error_description: str


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class _GrantError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description

    def response(self) -> JSONResponse:
        headers = dict(_NO_STORE)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="token"'
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, status_code=self.status, headers=headers)


_TOKEN_REQUEST = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "client_id": {
                            "type": "string",
                            "description": "With client_secret, unless sent by HTTP Basic",
                        },
                        "client_secret": {"type": "string", "format": "password"},
                        "scope": {
                            "type": "string",
                            "description": "Space-separated subset of the client's scopes "
                            "(default: all of them)",
                        },
                    },
                }
            }
        },
    }
}

router = APIRouter(tags=["auth"])


@router.post(
    "/token",
    response_model=TokenResponse,
    summary="Get an access token (OAuth2 client credentials)",
    responses={
        400: {"model": OAuthErrorResponse, "description": "Malformed request or scope"},
        401: {"model": OAuthErrorResponse, "description": "Unknown client or wrong secret"},
        503: {"model": OAuthErrorResponse, "description": "This server cannot issue tokens"},
    },
    openapi_extra=_TOKEN_REQUEST,
)
async def issue_token(request: Request) -> JSONResponse:
    """Trade a client's id and secret (form body or HTTP Basic) for a bearer token.

    Implements RFC 6749 §4.4; errors are RFC 6749 §5.2 JSON objects, never server errors.
    """
    try:
        form = await _read_form(request)
        grant_type = form.get("grant_type")
        if grant_type is None:
            raise _GrantError(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            raise _GrantError(400, "unsupported_grant_type", "only client_credentials is supported")
        client_id, secret = _client_credentials(request, form)
        store: ClientStore = request.app.state.clients
        allowed = await run_in_threadpool(store.authenticate, client_id, secret)
        if allowed is None:
            raise _GrantError(401, "invalid_client", "unknown client or wrong secret")
        granted = frozenset(form.get("scope", "").split()) or allowed
        if not granted <= allowed:
            raise _GrantError(
                400,
                "invalid_scope",
                f"requested scope exceeds this client's scopes ({' '.join(sorted(allowed))})",
            )
        authenticator: Authenticator = request.app.state.auth
        if not authenticator.can_mint:
            raise _GrantError(
                503, "temporarily_unavailable", "this server verifies tokens but cannot issue them"
            )
    except _GrantError as exc:
        return exc.response()
    body = TokenResponse(
        access_token=authenticator.mint(client_id, granted),
        token_type="bearer",
        expires_in=authenticator.ttl_seconds,
        scope=" ".join(sorted(granted)),
    )
    return JSONResponse(body.model_dump(), headers=_NO_STORE)


async def _read_form(request: Request) -> dict[str, str]:
    """The form parameters, each given at most once; empty ones count as absent (RFC 6749 §3.1)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise _GrantError(
            400, "invalid_request", "send parameters as application/x-www-form-urlencoded"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise _GrantError(400, "invalid_request", f"body exceeds {_MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(
            bytes(body).decode("utf-8"), errors="strict", max_num_fields=_MAX_FORM_FIELDS
        )
    except ValueError as exc:
        raise _GrantError(
            400,
            "invalid_request",
            f"body is not UTF-8 form data of at most {_MAX_FORM_FIELDS} fields",
        ) from exc
    for name, values in fields.items():
        if len(values) > 1:
            raise _GrantError(400, "invalid_request", f"parameter {name[:40]!r} is repeated")
    return {name: values[0] for name, values in fields.items()}


def _client_credentials(request: Request, form: Mapping[str, str]) -> tuple[str, str]:
    """The client id and secret, from HTTP Basic (RFC 6749 §2.3.1) or the form body."""
    header = request.headers.get("authorization")
    if header is None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if client_id is None or secret is None:
            raise _GrantError(
                401,
                "invalid_client",
                "authenticate with HTTP Basic, or client_id and client_secret in the body",
            )
        return client_id, secret
    kind, _, encoded = header.partition(" ")
    if kind.lower() != "basic":
        raise _GrantError(401, "invalid_client", "the Authorization header must use HTTP Basic")
    try:
        user, colon, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
        if not colon:
            raise ValueError("no colon")
        client_id = unquote_plus(user, errors="strict")
        secret = unquote_plus(password, errors="strict")
    except ValueError as exc:
        raise _GrantError(401, "invalid_client", "malformed HTTP Basic credentials") from exc
    if "client_secret" in form or form.get("client_id", client_id) != client_id:
        raise _GrantError(
            400, "invalid_request", "send client credentials by HTTP Basic or in the body, not both"
        )
    return client_id, secret
