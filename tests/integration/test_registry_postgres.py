"""The registry on a real PostgreSQL server, in a database made for this test and dropped after.

Uses SENTIMENT_TEST_POSTGRES_URL when set (`.ci/run` sets it), else the local server at
postgresql+psycopg2://postgres@127.0.0.1:5432/postgres if one answers there, so a plain
`make test` on a machine with PostgreSQL runs it too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from sklearn.pipeline import Pipeline
from sqlalchemy.engine import make_url

from sentiment_mlops.config import Settings, TrainConfig
from sentiment_mlops.model import build_pipeline
from sentiment_mlops.registry import Registry, RegistryUnavailable
from sentiment_mlops.serving.app import create_app

from ..apps import api_settings, bearer, captured_logs, eventually, ready_client
from ..postgres_databases import throwaway_database
from ..registry_reads import assert_tables_read_as_the_client

LOCAL_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
# What a read of versions and aliases touches, through MLflow's client or the registry's SQL:
# locking them all freezes the registry for either.
REGISTRY_TABLES = (
    "registered_models, registered_model_aliases, model_versions, model_version_tags, "
    "latest_metrics"
)


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
    with throwaway_database(SERVER, "sentiment_test") as url:
        yield url.render_as_string(hide_password=False)


def connect(uri: str, dbname: str | None = None) -> Any:
    """A psycopg2 connection of the test's own to the server of `uri`: to its database, or
    to `dbname`."""
    url = make_url(uri)
    return psycopg2.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=dbname or url.database,
    )


def small_pipeline() -> Pipeline:
    texts = ["good movie", "bad movie", "great film", "awful film"] * 3
    labels = ["pos", "neg", "pos", "neg"] * 3
    pipeline = build_pipeline(TrainConfig.model_validate({"vectorizer": {"min_df": 1}}))
    return pipeline.fit(texts, labels)


def registry_with_a_champion(uri: str, var: Path, timeout_seconds: float) -> Registry:
    registry = Registry(
        Settings(var_dir=var, mlflow_tracking_uri=uri, registry_timeout_seconds=timeout_seconds)
    )
    registry.register(small_pipeline(), params={}, metrics={}, tags={"data_source": "pg"})
    return registry


def test_register_promote_rollback_and_load_on_postgres(
    postgres_uri: str, tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres_uri)
    registry = Registry(Settings(var_dir=tmp_path / "var"))
    pipeline = small_pipeline()
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


def test_the_tables_read_as_mlflows_client_does_on_postgres(
    postgres_uri: str, tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQL reads of `sentiment models list` and `predict` agree with MLflow's client on
    PostgreSQL as on SQLite (tests/unit/test_registry.py)."""
    registry = Registry(Settings(var_dir=tmp_path / "var", mlflow_tracking_uri=postgres_uri))
    assert_tables_read_as_the_client(registry, small_pipeline(), monkeypatch)


def test_a_locked_registry_table_times_out_in_the_driver_instead_of_hanging(
    postgres_uri: str, tmp_path: Path, clean_env: None
) -> None:
    """The statement timeout the registry adds to the URI ends a read stuck behind a lock."""
    registry = registry_with_a_champion(postgres_uri, tmp_path / "var", timeout_seconds=1)
    locker = connect(postgres_uri)
    try:
        with locker.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {REGISTRY_TABLES} IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="statement timeout"):
            registry.resolve("champion")
        waited = time.monotonic() - started
    finally:
        locker.rollback()
        locker.close()
    assert waited < 20, "the driver gave up; the read did not wait for the lock"
    assert registry.resolve("champion") == 1


def test_reload_against_a_frozen_registry_database_answers_timeout_and_keeps_serving(
    postgres_uri: str, tmp_path: Path, clean_env: None
) -> None:
    """The original failure: /admin/reload hung while the registry's database was frozen.
    Here a table lock held by another connection freezes it, longer than the server waits
    (0.5 s) and shorter than the driver's own statement timeout (30 s)."""
    source = registry_with_a_champion(postgres_uri, tmp_path / "var", timeout_seconds=30)
    app = create_app(api_settings(tmp_path / "var", registry_timeout_seconds=0.5), source)
    locker = connect(postgres_uri)
    try:
        with ready_client(app, headers=bearer("predict", "admin")) as client:
            with locker.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {REGISTRY_TABLES} IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            frozen = client.post("/admin/reload").json()["results"][0]
            answered_after = time.monotonic() - started
            again = client.post("/admin/reload").json()["results"][0]
            served = client.post("/predict", json={"text": "good film"})
            locker.rollback()
            eventually(
                lambda: client.post("/admin/reload").json()["results"][0]["result"] == "unchanged",
                "a reload once the lock is gone",
            )
    finally:
        locker.rollback()
        locker.close()
    assert frozen["result"] == "timeout" and "within 0.5 s" in frozen["error"]
    assert answered_after < 15, "answered when the server stopped waiting, not hung"
    assert again["result"] == "timeout" and "no new call until it does" in again["error"]
    assert served.status_code == 200 and served.json()["model_version"] == 1


def test_a_registry_database_that_goes_away_is_unreachable_logged_once_without_tracebacks(
    postgres_uri: str, tmp_path: Path, clean_env: None
) -> None:
    """Registry down was reported as "missing" while MLflow logged a ~125-line traceback for
    every failed call. Now: "unreachable", one JSON line when it starts and one when it ends,
    and nothing from MLflow's store logger."""
    source = registry_with_a_champion(postgres_uri, tmp_path / "var", timeout_seconds=10)
    app = create_app(api_settings(tmp_path / "var"), source)
    name = make_url(postgres_uri).database
    admin = connect(postgres_uri, dbname="postgres")
    admin.autocommit = True

    def allow_connections(allowed: bool) -> None:
        with admin.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {allowed}')
            if not allowed:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )

    try:
        with (
            ready_client(app, headers=bearer("admin")) as client,
            captured_logs() as lines,
            captured_logs("mlflow", logging.WARNING) as mlflow_lines,
        ):
            allow_connections(False)
            down = [client.post("/admin/reload").json()["results"][0] for _ in range(3)]
            ready = client.get("/ready").json()
            allow_connections(True)
            back = client.post("/admin/reload").json()["results"][0]
            metrics = client.get("/metrics").text
    finally:
        allow_connections(True)
        admin.close()
    assert [r["result"] for r in down] == ["unreachable"] * 3
    assert all("not currently accepting connections" in r["error"] for r in down)
    assert ready["status"] == "ready", "the loaded model keeps serving"
    assert back["result"] == "unchanged"
    states = [r["msg"] for r in lines if "registry_state" in r]
    assert states == ["model registry unreachable", "model registry answers again"]
    assert mlflow_lines == []
    assert 'model_registry_errors_total{operation="resolve",reason="unreachable"} 3.0' in metrics
