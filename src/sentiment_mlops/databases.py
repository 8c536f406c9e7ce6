"""Database URLs shared by the registry's store and the prediction log: what kind of store a
URL names, and the driver's own timeouts, so a call to a frozen database ends by itself."""

from __future__ import annotations

import math
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import make_url


def masked_url(uri: str) -> str:
    """`uri` as it may be shown (a log line, a message): its password, if any, replaced."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def url_scheme(uri: str) -> str:
    """The store kind a URI names: `postgresql` for `postgresql+psycopg2://…`."""
    return uri.split(":", 1)[0].split("+", 1)[0]


def with_driver_timeouts(uri: str, seconds: float) -> str:
    """`uri` with the database driver's own timeouts added where the URI does not set them.

    A thread waiting on a frozen database cannot be interrupted; these make the driver give
    up instead. MLflow builds its engine from the URI alone (its `MLFLOW_SQLALCHEMYSTORE_*`
    variables set pool options, not driver ones), so the URI's query is the one way in:
    - PostgreSQL (psycopg2, psycopg): libpq's `connect_timeout` (whole seconds, at least 2)
      and a server-side `statement_timeout`, which also bounds waiting for a lock. (A server
      that is stopped outright cannot cancel anything: then only the caller's timeout helps.)
    - MySQL (PyMySQL, mysqlclient): `connect_timeout`, `read_timeout`, `write_timeout`.
    - SQLite: nothing to add. MLflow runs `PRAGMA busy_timeout = 20000` at the start of every
      session (`mlflow/store/db/utils.py`), replacing the driver's `timeout`, so a locked
      file makes each statement wait up to 20 s; the server's own timeout answers first.
    Other stores are left as they are.
    """
    if url_scheme(uri) not in ("postgresql", "mysql"):
        return uri
    url = make_url(uri)
    whole = str(max(2, math.ceil(seconds)))
    query = dict(url.query)
    if url.get_backend_name() == "postgresql" and url.get_driver_name() in ("psycopg2", "psycopg"):
        query.setdefault("connect_timeout", whole)
        options = str(query.get("options", ""))
        if "statement_timeout" not in options:
            timeout = f"-c statement_timeout={math.ceil(seconds * 1000)}"
            query["options"] = f"{options} {timeout}".strip()
    elif url.get_backend_name() == "mysql":
        for key in ("connect_timeout", "read_timeout", "write_timeout"):
            query.setdefault(key, whole)
    return url.set(query=query).render_as_string(hide_password=False)
