"""The registry on a real PostgreSQL server, in a database made for this test and dropped after.

Uses SENTIMENT_TEST_POSTGRES_URL when set (`.ci/run` sets it), else the local server at
postgresql+psycopg2://postgres@127.0.0.1:5432/postgres if one answers there, so a plain
`make test` on a machine with PostgreSQL runs it too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from sentiment_mlops.config import Settings, TrainConfig
from sentiment_mlops.model import build_pipeline
from sentiment_mlops.registry import Registry

LOCAL_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def _server() -> str | None:
    configured = os.environ.get("SENTIMENT_TEST_POSTGRES_URL")
    if configured:
        return configured
    url = make_url(LOCAL_SERVER)
    try:
        psycopg2.connect(
            host=url.host, port=url.port, user=url.username, dbname=url.database, connect_timeout=2
        ).close()
    except psycopg2.OperationalError:
        return None
    return LOCAL_SERVER


SERVER = _server()
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not SERVER, reason=f"no PostgreSQL at {LOCAL_SERVER} and SENTIMENT_TEST_POSTGRES_URL unset"
    ),
]


@pytest.fixture
def postgres_uri() -> Iterator[str]:
    assert SERVER
    url = make_url(SERVER)
    name = f"sentiment_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database or "postgres",
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_register_promote_rollback_and_load_on_postgres(
    postgres_uri: str, tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres_uri)
    registry = Registry(Settings(var_dir=tmp_path / "var"))
    texts = ["good movie", "bad movie", "great film", "awful film"] * 3
    labels = ["pos", "neg", "pos", "neg"] * 3
    pipeline = build_pipeline(TrainConfig.model_validate({"vectorizer": {"min_df": 1}}))
    pipeline.fit(texts, labels)
    for alias in (None, "challenger"):
        registry.register(
            pipeline,
            params={"seed": 1},
            metrics={"accuracy": 1.0},
            tags={"data_source": "pg"},
            alias=alias,
        )
    assert registry.tracking_uri.startswith("postgresql+psycopg2://")
    assert {v.version: v.aliases for v in registry.versions()} == {
        2: ["challenger"],
        1: ["champion"],
    }
    registry.promote(2, "champion")
    assert registry.load("champion").version == 2
    assert registry.rollback() == 1
    loaded = registry.load("champion")
    assert loaded.version == 1
    assert list(loaded.pipeline.predict(["good"])) == ["pos"]
