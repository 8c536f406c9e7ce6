"""The registry against a real MLflow store (SQLite in a temporary folder)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from sentiment_mlops import model_files
from sentiment_mlops.checksums import file_sha256
from sentiment_mlops.config import Settings, TrainConfig
from sentiment_mlops.data import LabelledTexts, Split
from sentiment_mlops.databases import with_driver_timeouts
from sentiment_mlops.model import build_pipeline
from sentiment_mlops.registry import (
    IntegrityError,
    Registry,
    RegistryError,
    RegistryUnavailable,
)
from sentiment_mlops.serving.launcher import free_port
from sentiment_mlops.train import DataSpec, fit

from ..registry_reads import assert_tables_read_as_the_client

TEXTS = ["good movie", "bad movie", "great film", "awful film", "nice one", "poor one"] * 3
LABELS = ["pos", "neg", "pos", "neg", "pos", "neg"] * 3


def fitted() -> Pipeline:
    pipeline = build_pipeline(TrainConfig.model_validate({"vectorizer": {"min_df": 1}}))
    return pipeline.fit(TEXTS, LABELS)


def register(registry: Registry, alias: str | None = None, pipeline: Pipeline | None = None) -> int:
    info = registry.register(
        pipeline or fitted(),
        params={"seed": 1, "ngram_range": (1, 2)},
        metrics={"accuracy": 0.75},
        tags={"data_source": "unit", "data_fingerprint": "f" * 64},
        alias=alias,
    )
    return info.version


@pytest.fixture
def registry(tmp_path: Path, clean_env: None) -> Registry:
    return Registry(Settings(var_dir=tmp_path / "var"))


def test_first_version_is_champion_later_ones_only_when_asked(registry: Registry) -> None:
    assert register(registry) == 1
    assert register(registry) == 2
    assert register(registry, alias="challenger") == 3
    aliases = {v.version: v.aliases for v in registry.versions()}
    assert aliases == {3: ["challenger"], 2: [], 1: ["champion"]}
    assert registry.resolve("champion") == 1


def test_run_records_params_metrics_fingerprint_and_environment(registry: Registry) -> None:
    register(registry)
    info = registry.version(1)
    run = registry.client.get_run(info.run_id)
    assert run.data.params["ngram_range"] == "[1, 2]"
    assert run.data.metrics["accuracy"] == 0.75
    assert run.data.tags["data_fingerprint"] == "f" * 64
    assert run.data.tags["lib.scikit-learn"]
    assert "git_commit" in run.data.tags
    assert run.data.tags["sha256"] == info.sha256 and len(info.sha256) == 64
    assert run.info.status == "FINISHED"


def test_register_training_records_the_whole_result(registry: Registry) -> None:
    data = LabelledTexts(TEXTS, LABELS, "unit.csv")
    spec = DataSpec(Path("unit.csv"))
    result = fit(Split(data, data), TrainConfig(), spec)
    info = registry.register_training(result, alias="challenger")
    assert info.aliases == ["challenger", "champion"]
    assert info.data_source == "unit.csv"
    run = registry.client.get_run(info.run_id)
    assert run.data.params["data.n_train"] == str(len(TEXTS))
    assert run.data.params["vectorizer.ngram_range"] == "[1, 2]"
    assert run.data.metrics == pytest.approx(result.metrics)
    assert run.data.tags["data_fingerprint"] == data.fingerprint()
    artifacts = {a.path for a in registry.client.list_artifacts(info.run_id)}
    assert {"report.json", "roc.png", "train_config.json", "model"} <= artifacts


def test_the_tables_read_as_mlflows_client_does(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Versions, aliases, metrics and tags read with SQL (no mlflow import, so a fast
    `sentiment models list`) are what MLflow's client reads from the same SQLite store."""
    assert_tables_read_as_the_client(registry, fitted(), monkeypatch)


def test_an_empty_store_has_no_versions_and_no_aliases(registry: Registry) -> None:
    """Before MLflow has created its tables (nothing registered yet): nothing, not an error."""
    assert registry.versions() == []
    assert registry.resolve("champion") is None
    with pytest.raises(RegistryError, match="has no version 1"):
        registry.version(1)


def test_promote_and_rollback(registry: Registry) -> None:
    for _ in range(3):
        register(registry)
    registry.promote(2, "champion")
    registry.promote(3, "champion")
    assert registry.rollback() == 2
    assert registry.resolve("champion") == 2
    assert registry.rollback() == 1
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback()


def test_promote_unknown_version(registry: Registry) -> None:
    register(registry)
    with pytest.raises(RegistryError, match="has no version 7"):
        registry.promote(7, "champion")


def test_load_by_alias_and_number_predicts_like_the_original(registry: Registry) -> None:
    original = fitted()
    register(registry, pipeline=original)
    for ref in ("champion", 1, "1"):
        loaded = registry.load(ref)
        assert loaded.version == 1
        assert (loaded.pipeline.predict_proba(TEXTS) == original.predict_proba(TEXTS)).all()


def test_load_missing_alias(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="no version with alias 'champion'"):
        registry.load("champion")


def test_a_store_that_refuses_connections_is_unavailable_not_missing(
    tmp_path: Path, clean_env: None
) -> None:
    """A PostgreSQL store that refused connections was read as "alias not set" (and took
    MLflow ~100 s of retries to say even that): now every read says the store is unreachable,
    at once."""
    uri = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/sentiment"
    started = time.monotonic()
    registry = Registry(Settings(var_dir=tmp_path / "var", mlflow_tracking_uri=uri))
    reads = {
        "resolve": lambda: registry.resolve("champion"),
        "load": lambda: registry.load("champion"),
        "versions": registry.versions,
    }
    for name, read in reads.items():
        with pytest.raises(RegistryUnavailable, match=r"^registry unreachable: .*refused") as err:
            read()
        assert isinstance(err.value, ConnectionError), name
    assert time.monotonic() - started < 30, "no retries for minutes before answering"


def test_database_uris_get_the_drivers_timeouts_unless_they_set_their_own() -> None:
    pg = "postgresql+psycopg2://u:p%40ss@db:5432/mlflow"
    assert with_driver_timeouts(pg, 1.5) == (
        f"{pg}?connect_timeout=2&options=-c+statement_timeout%3D1500"
    )
    own = f"{pg}?connect_timeout=30&options=-c+search_path%3Dml+-c+statement_timeout%3D0"
    assert with_driver_timeouts(own, 10) == own
    searched = with_driver_timeouts(f"{pg}?options=-c+search_path%3Dml", 10)
    assert searched.endswith("options=-c+search_path%3Dml+-c+statement_timeout%3D10000")
    assert with_driver_timeouts("mysql+pymysql://u@db/mlflow", 10) == (
        "mysql+pymysql://u@db/mlflow?connect_timeout=10&read_timeout=10&write_timeout=10"
    )
    for unchanged in ("sqlite:////var/mlflow.db", "http://mlflow:5000", "file:///tmp/mlruns"):
        assert with_driver_timeouts(unchanged, 10) == unchanged


def test_tampered_artifact_is_refused(registry: Registry, tmp_path: Path) -> None:
    register(registry)
    artifact = next((tmp_path / "var" / "mlartifacts").rglob("model.skops"))
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match="does not match the registered"):
        registry.load("champion")


def test_untrusted_types_are_refused_even_with_a_matching_hash(
    registry: Registry, tmp_path: Path
) -> None:
    """Someone who can write both the artifact and the registry still cannot run code."""
    register(registry)
    artifact = next((tmp_path / "var" / "mlartifacts").rglob("model.skops"))
    risky = Pipeline([("f", FunctionTransformer(func=os.getcwd)), ("m", fitted())])
    skops.io.dump(risky, artifact)
    registry.client.set_model_version_tag("sentiment", "1", "sha256", file_sha256(artifact))
    with pytest.raises(IntegrityError, match=r"outside the trusted set: posix.getcwd"):
        registry.load("champion")


def test_a_pipeline_skops_would_refuse_to_load_is_not_registered(registry: Registry) -> None:
    risky = Pipeline([("f", FunctionTransformer(func=os.getcwd)), ("m", fitted())])
    with pytest.raises(RegistryError, match=r"outside skops' trusted set \(.*posix\.getcwd"):
        register(registry, pipeline=risky)
    assert registry.versions() == []
    assert registry.client.get_experiment_by_name("sentiment") is None


def test_failure_while_registering_leaves_no_version_and_no_live_run(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(registry)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(model_files, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        register(registry, alias="champion")
    assert [v.version for v in registry.versions()] == [1]
    assert registry.resolve("champion") == 1
    experiment = registry.client.get_experiment_by_name("sentiment")
    assert experiment is not None
    live = registry.client.search_runs([experiment.experiment_id])
    assert len(live) == 1


def test_mlflow_loads_the_registered_model_by_alias_uri(registry: Registry) -> None:
    """Users' own MLflow tooling (`models:/sentiment@champion`) reads what we register."""
    import mlflow

    original = fitted()
    register(registry, pipeline=original)
    mlflow.set_registry_uri(registry.tracking_uri)
    mlflow.set_tracking_uri(registry.tracking_uri)
    try:
        loaded = mlflow.sklearn.load_model("models:/sentiment@champion")
    finally:
        mlflow.set_tracking_uri("")
        mlflow.set_registry_uri("")
    assert (loaded.predict_proba(TEXTS) == original.predict_proba(TEXTS)).all()


def test_mlflows_pyfunc_predicts_labels_from_a_list_of_texts(registry: Registry) -> None:
    """`mlflow models serve` and `mlflow.pyfunc.load_model(...).predict` feed the model what
    its signature says. A one-column string schema made pyfunc pass a DataFrame, whose
    column labels the vectorizer read as the texts (every request of `mlflow models serve`
    answered 400); the signature is a 1-D string tensor, so texts arrive as texts."""
    import mlflow

    original = fitted()
    register(registry, pipeline=original)
    mlflow.set_registry_uri(registry.tracking_uri)
    mlflow.set_tracking_uri(registry.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model("models:/sentiment@champion")
    finally:
        mlflow.set_tracking_uri("")
        mlflow.set_registry_uri("")
    texts = np.array(TEXTS, dtype=object)
    assert list(model.predict(texts)) == list(original.predict(TEXTS))
