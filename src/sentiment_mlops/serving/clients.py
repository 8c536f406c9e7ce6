"""OAuth2 clients: who may trade an id and secret for a token, and their secrets' scrypt hashes.

Clients live in a JSON file (`SENTIMENT_OAUTH_CLIENTS_FILE`) that holds only scrypt hashes;
`add_client` writes it (for `sentiment token add-client`) and `ClientStore` reads it, again
whenever it changes, for `POST /token`.

This module must not import FastAPI or Starlette (`serving.auth` is the HTTP face); it builds
on `serving.tokens` for scope names and must not be imported by it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sentiment_mlops.serving.private_files import write_private_file
from sentiment_mlops.serving.tokens import SCOPES, AuthConfigError, check_scopes

log = logging.getLogger("sentiment_mlops.serving.clients")

_CLIENT_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")

# scrypt cost: about 30 ms and 16 MiB per hash, so /token stays cheap but guessing does not.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_SCRYPT_DKLEN = 32


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
        check_scopes(self.scopes)


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
    granted = check_scopes(scopes)
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
    write_private_file(path, json.dumps(document, indent=2) + "\n", replace=True)
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
