"""A PostgreSQL database made for one test and dropped after it, on the machine's server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
from sqlalchemy.engine import URL, make_url


@contextmanager
def throwaway_database(server: str, prefix: str) -> Iterator[URL]:
    """The URL of a new database `<prefix>_<random>` on `server` (a SQLAlchemy URL), dropped
    on exit even while connections to it are open (`WITH (FORCE)`)."""
    url = make_url(server)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database or "postgres",
        connect_timeout=5,
    )
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            yield url.set(database=name)
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()
