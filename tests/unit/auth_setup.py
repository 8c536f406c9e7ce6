"""Settings, the shared HS256 secret and JWT claims for the token, client and auth HTTP tests."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from sentiment_mlops.config import Settings

SECRET = "s" * 48
ISSUER, AUDIENCE = "sentiment-mlops", "sentiment-api"
UNKNOWN_ROOT = "unknown scope(s) ['root']; known: ['admin', 'feedback', 'predict']"


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
