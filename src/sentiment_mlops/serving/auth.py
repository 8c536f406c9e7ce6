"""The HTTP face of auth: the OAuth2 security scheme, `require_scope`, and `POST /token`.

Clients trade their id and secret for a short-lived token at `POST /token` (the OAuth2
client-credentials grant, RFC 6749 §4.4); protected routes check that token with
`require_scope`. What a token is lives in `serving.tokens`, who the clients are in
`serving.clients`, and how hard `/token` may be pushed in `serving.throttle`; this is the only
auth module that may import FastAPI or Starlette, and none of those modules may import it.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal
from urllib.parse import parse_qs, unquote_plus

from fastapi import APIRouter, HTTPException, Request, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2
from pydantic import BaseModel

from sentiment_mlops.serving.clients import ClientStore
from sentiment_mlops.serving.deps import AuthenticatorDep, ClientsDep, ThrottleDep
from sentiment_mlops.serving.throttle import ChecksBusy, LockedOut, TokenThrottle
from sentiment_mlops.serving.tokens import (
    ANONYMOUS,
    SCOPE_DESCRIPTIONS,
    Authenticator,
    AuthError,
    Principal,
    check_scopes,
)

_MAX_FORM_BYTES = 8192
_MAX_FORM_FIELDS = 16


_oauth2 = OAuth2(
    flows=OAuthFlows(
        clientCredentials=OAuthFlowClientCredentials(tokenUrl="token", scopes=SCOPE_DESCRIPTIONS)
    ),
    scheme_name="OAuth2ClientCredentials",
    description="Get a token from POST /token and send it as `Authorization: Bearer <token>`.",
    auto_error=False,
)


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting requests whose bearer token grants `scope`, returning its principal.

    The authenticator comes from the app's services (`AuthenticatorDep`), so the app factory
    (or a test's dependency override) decides the keys; when auth is disabled every request
    is the all-scopes `ANONYMOUS`.
    """
    check_scopes([scope])

    # A default, not Annotated: annotations are strings here and FastAPI resolves them in the
    # module's globals, where the closure's `scope` does not exist.
    async def dependency(
        authenticator: AuthenticatorDep,
        authorization: str | None = Security(_oauth2, scopes=[scope]),
    ) -> Principal:
        return authorize(authenticator, authorization, scope)

    return dependency


def authorize(authenticator: Authenticator, authorization: str | None, scope: str) -> Principal:
    """The principal of an `Authorization` header's bearer token granting `scope`; the 401 or
    403 HTTPException a client is answered with otherwise. Every protected route's check, and
    the flat /predict path's (serving/fast_path.py)."""
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
    def __init__(
        self, status: int, error: str, description: str, retry_after: int | None = None
    ) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        headers = dict(_NO_STORE)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="token"'
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
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
        429: {
            "model": OAuthErrorResponse,
            "description": "Too many failed attempts for this client id or from this address; "
            "refused even with the right secret until Retry-After seconds have passed",
        },
        503: {
            "model": OAuthErrorResponse,
            "description": "This server cannot issue tokens, or is busy checking other secrets "
            "(see Retry-After)",
        },
    },
    openapi_extra=_TOKEN_REQUEST,
)
async def issue_token(
    request: Request, store: ClientsDep, authenticator: AuthenticatorDep, throttle: ThrottleDep
) -> JSONResponse:
    """Trade a client's id and secret (form body or HTTP Basic) for a bearer token.

    Implements RFC 6749 §4.4; errors are RFC 6749 §5.2 JSON objects, never server errors.
    Failed secrets lock the client id (and the address) out for a while; see `serving.throttle`.
    """
    try:
        form = await _read_form(request)
        grant_type = form.get("grant_type")
        if grant_type is None:
            raise _GrantError(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            raise _GrantError(400, "unsupported_grant_type", "only client_credentials is supported")
        client_id, secret = _client_credentials(request, form)
        address = request.client.host if request.client else "unknown"
        allowed = await _check_secret(throttle, store, client_id, secret, address)
        granted = frozenset(form.get("scope", "").split()) or allowed
        if not granted <= allowed:
            raise _GrantError(
                400,
                "invalid_scope",
                f"requested scope exceeds this client's scopes ({' '.join(sorted(allowed))})",
            )
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


async def _check_secret(
    throttle: TokenThrottle, store: ClientStore, client_id: str, secret: str, address: str
) -> frozenset[str]:
    """The client's scopes, if not locked out, a check is free, and the secret is right."""
    check = functools.partial(store.authenticate, client_id, secret)
    try:
        allowed = await throttle.check(client_id, address, check)
    except LockedOut as exc:
        raise _GrantError(429, "temporarily_unavailable", str(exc), exc.retry_after) from exc
    except ChecksBusy as exc:
        raise _GrantError(
            503, "temporarily_unavailable", "busy checking other secrets; retry", retry_after=1
        ) from exc
    if allowed is None:
        raise _GrantError(401, "invalid_client", "unknown client or wrong secret")
    return allowed


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
