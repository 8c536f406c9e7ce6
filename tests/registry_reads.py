"""The registry's reads of a database store's tables, checked against MLflow's client.

`Registry` reads a database store with SQL (no mlflow import) and other stores through
MLflow's client; `assert_tables_read_as_the_client` fills a store with what the SQL must get
right (several aliases on one version, a version without any, a deleted version, a NaN
metric), then compares every read both ways on that same store.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from sklearn.pipeline import Pipeline

from sentiment_mlops.registry import Registry, RegistryError


def fill(registry: Registry, pipeline: Pipeline) -> None:
    """Four versions: 1 champion before 3 took it, 2 deleted, 3 champion and canary, 4
    challenger; version 4's run has a NaN metric."""
    for number in range(1, 5):
        registry.register(
            pipeline,
            params={"seed": number},
            metrics={"accuracy": 0.5 + number / 10, "loss": math.nan if number == 4 else 0.1},
            tags={"data_source": f"data-{number}.csv"},
            alias="challenger" if number == 4 else None,
        )
    registry.promote(3, "champion")
    registry.promote(3, "canary")
    registry.client.delete_model_version(registry.name, "2")


def answers(registry: Registry) -> str:
    """Every read, as text (NaN is then equal to itself)."""
    reads: dict[str, Any] = {"versions": registry.versions()}
    for number in range(1, 6):
        try:
            reads[f"version {number}"] = registry.version(number)
        except RegistryError as exc:
            reads[f"version {number}"] = str(exc)
    for alias in ("champion", "challenger", "canary", "missing"):
        reads[f"resolve {alias}"] = registry.resolve(alias)
    return repr(reads)


def assert_tables_read_as_the_client(
    registry: Registry, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(registry, pipeline)
    from_tables = answers(registry)
    with monkeypatch.context() as patch:
        patch.setattr(Registry, "_tables", property(lambda self: None))
        from_client = answers(registry)
    assert from_tables == from_client
    assert [(v.version, v.aliases) for v in registry.versions()] == [
        (4, ["challenger"]),
        (3, ["canary", "champion"]),
        (1, []),
    ]
    assert math.isnan(registry.version(4).metrics["loss"])
