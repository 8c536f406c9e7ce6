"""Loading a version in a child process (serving/loader.py), against a real MLflow store: the
answer is the model the registry holds, scored exactly as in process, and every way a load can
fail reaches the pool as the failure it is."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from sentiment_mlops.config import Settings
from sentiment_mlops.model import LoadedModel
from sentiment_mlops.registry import IntegrityError, Registry, RegistryUnavailable
from sentiment_mlops.serving.launcher import free_port
from sentiment_mlops.serving.loader import LoadFailed, LoadUnreachable, _portable, load_in_child
from sentiment_mlops.serving.models import load_here

from .test_registry import fitted, register

TEXTS = ["good movie", "awful film, a poor one", "", "nice"]


@pytest.fixture
def registry(tmp_path: Path, clean_env: None) -> Registry:
    return Registry(Settings(var_dir=tmp_path / "var"))


def test_a_registry_pickles_as_its_settings_and_opens_the_same_store(registry: Registry) -> None:
    register(registry)
    copy = pickle.loads(pickle.dumps(registry))
    assert copy.tracking_uri == registry.tracking_uri and copy.resolve("champion") == 1


def test_the_child_scores_as_in_process_and_refuses_a_tampered_artifact(
    registry: Registry, tmp_path: Path
) -> None:
    register(registry)
    version = register(registry, pipeline=fitted())
    tampered = register(registry)
    here = load_here(registry, version)
    child = load_in_child(registry, version)
    assert here.loaded_by == os.getpid()
    assert child.loaded_by != os.getpid()
    assert (child.version, child.sha256, child.run_id) == (version, here.sha256, here.run_id)
    assert child.scorer.kind == "compiled"
    assert child.scorer.classes == here.scorer.classes
    np.testing.assert_array_equal(
        child.scorer.predict_proba(TEXTS), here.scorer.predict_proba(TEXTS)
    )
    run_id = registry.version(tampered).run_id
    (artifact,) = (tmp_path / "var" / "mlartifacts").glob(f"{run_id}/artifacts/model/model.skops")
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match="does not match the registered"):
        load_in_child(registry, tampered)


def test_an_unreachable_registry_stays_a_connection_error(tmp_path: Path, clean_env: None) -> None:
    uri = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/mlflow"
    registry = Registry(Settings(var_dir=tmp_path / "var", mlflow_tracking_uri=uri))
    with pytest.raises(RegistryUnavailable):
        load_in_child(registry, 1)


class Dies:
    """A source whose load ends the process without an answer (as an OOM kill would)."""

    def resolve(self, alias: str) -> int | None:
        return 1

    def load(self, ref: str | int) -> LoadedModel:
        os._exit(3)


class Odd(Exception):
    """An exception that does not pickle: it holds a lock. (A required keyword argument used to
    be the example, but importing dask's `distributed` in the same process, as the tuning tests
    do, registers reducers that rebuild such exceptions, and the test then depended on which
    files its xdist worker had run.)"""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class OddConnection(ConnectionError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def test_a_child_that_dies_without_answering_is_a_load_failure() -> None:
    with pytest.raises(LoadFailed, match="exited with code 3 before answering for version 7"):
        load_in_child(Dies(), 7)


def test_exceptions_that_do_not_pickle_keep_their_message_and_kind() -> None:
    ordinary = ValueError("bad")
    assert _portable(ordinary) is ordinary
    odd = _portable(Odd("no luck"))
    assert isinstance(odd, LoadFailed) and str(odd) == "Odd: no luck"
    unreachable = _portable(OddConnection("db down"))
    assert isinstance(unreachable, LoadUnreachable) and isinstance(unreachable, ConnectionError)
    assert str(unreachable) == "OddConnection: db down"


def test_the_pipeline_of_a_source_is_never_sent_back(registry: Registry) -> None:
    """Only the compiled scorer crosses the pipe: the pickled answer holds no Pipeline."""
    register(registry)
    answer = pickle.dumps(load_here(registry, 1))
    assert Pipeline.__name__.encode() not in answer
