"""MLflow's registry tables read by SQL: a database store's versions, aliases and metrics
without `import mlflow` (over a second) or MLflow's client, whose store checks the schema's
migrations when it opens. `sentiment models list` took 5 s through it.

The queries read MLflow's own tables (`model_versions`, `model_version_tags`,
`registered_model_aliases`, `latest_metrics`) and give what MLflow's client gives:
`tests/registry_reads.py` compares every read with it on SQLite and PostgreSQL, so a change
of MLflow's schema fails there first. `Registry` (registry.py) decides when to read this way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy

# MLflow's stage of a version being deleted; its own searches leave such versions out.
DELETED_STAGE = "Deleted_Internal"


@dataclass(frozen=True)
class VersionRow:
    """One version as MLflow's tables hold it: its row, tags, aliases and run's metrics."""

    version: int
    created: datetime
    run_id: str
    source: str
    tags: dict[str, str]
    aliases: list[str]
    metrics: dict[str, float]


def aliases(connection: sqlalchemy.Connection, name: str) -> dict[str, int]:
    """The model's aliases and the versions they point at."""
    rows = connection.execute(
        sqlalchemy.text("SELECT alias, version FROM registered_model_aliases WHERE name = :name"),
        {"name": name},
    )
    return {alias: int(version) for alias, version in rows}


def versions(
    connection: sqlalchemy.Connection, name: str, version: int | None = None
) -> list[VersionRow]:
    """The model's versions (or the one `version`), newest first: what MLflow's
    `search_model_versions`, its registered model's aliases and its runs' latest metrics say,
    in four queries."""
    bound = {"name": name, "version": version}

    def select(columns: str, table: str, join: str = "") -> list[Any]:
        owner = "v." if join else ""
        where = f"{owner}name = :name" + (
            "" if version is None else f" AND {owner}version = :version"
        )
        sql = f"SELECT {columns} FROM {table} {join} WHERE {where}"
        return list(connection.execute(sqlalchemy.text(sql), bound))

    rows = [
        row
        for row in select("version, creation_time, run_id, source, current_stage", "model_versions")
        if row[-1] != DELETED_STAGE
    ]
    tags: dict[int, dict[str, str]] = {}
    for number, key, value in select("version, key, value", "model_version_tags"):
        tags.setdefault(int(number), {})[key] = value
    by_version: dict[int, list[str]] = {}
    for alias, number in select("alias, version", "registered_model_aliases"):
        by_version.setdefault(int(number), []).append(alias)
    metrics: dict[str, dict[str, float]] = {}
    for run_id, key, value, is_nan in select(
        "m.run_uuid, m.key, m.value, m.is_nan",
        "latest_metrics m",
        "JOIN model_versions v ON v.run_id = m.run_uuid",
    ):
        metrics.setdefault(run_id, {})[key] = math.nan if is_nan else float(value)
    found = [
        VersionRow(
            version=int(number),
            created=datetime.fromtimestamp(created / 1000, UTC),
            run_id=run_id or "",
            source=source or "",
            tags=tags.get(int(number), {}),
            aliases=sorted(by_version.get(int(number), [])),
            metrics=metrics.get(run_id, {}) if run_id else {},
        )
        for number, created, run_id, source, _ in rows
    ]
    return sorted(found, key=lambda v: -v.version)
