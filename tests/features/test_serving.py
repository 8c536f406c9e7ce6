"""Serving a model trained with entity features: `/predict` reads them from the online store
(SQLite, Redis), scores text + features in the compiled scorer, and answers with defaults,
counted and marked, when an entity is unknown or not given, or the store is down or frozen."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sklearn.pipeline import Pipeline
from sqlalchemy.engine import make_url

from tests.apps import api_settings, bearer, ready_client
from tests.fakes import FakeSource
from tests.features.conftest import AS_OF, materialise_hand_events, needs_feast
from tests.prediction_events import keyed_hash

needs_feast()

from feast.feature_view import FeatureViewState  # noqa: E402

from sentiment_mlops.config import Settings, TrainConfig  # noqa: E402
from sentiment_mlops.features.aggregates import DEFAULTS, FEATURES  # noqa: E402
from sentiment_mlops.features.repository import (  # noqa: E402
    historical_features,
    open_repository,
)
from sentiment_mlops.model import (  # noqa: E402
    COLUMNS_STEP,
    ENTITY_BRANCH,
    build_pipeline,
    model_input,
)
from sentiment_mlops.scorer import CompiledLinearScorer, make_scorer  # noqa: E402
from sentiment_mlops.serving.app import create_app  # noqa: E402

TEXT = "@Delta thanks, that was quick"


@pytest.fixture(scope="module")
def features_model(shared_data: Path) -> Pipeline:
    """A text + entity features model, fitted on real tweets with entity values that matter
    (so a wrong value changes the probabilities)."""
    source = shared_data / "twitter-us-airline-sentiment" / "with-context.csv"
    tweets = pd.read_csv(source, dtype=str, keep_default_na=False).iloc[:1200]
    labels = tweets["label"]
    rng = np.random.default_rng(0)
    entities = rng.random((len(tweets), len(FEATURES)))
    entities[:, 0] = rng.integers(0, 6, len(tweets))
    entities[:, 4] = rng.integers(0, 300, len(tweets))
    texts = tweets["text"].tolist()
    pipeline = build_pipeline(TrainConfig(), FEATURES)
    return pipeline.fit(model_input(texts, entities, FEATURES), labels.to_numpy(dtype=object))


def serve(
    var: Path, settings: Settings, model: Pipeline, **overrides: Any
) -> AbstractContextManager[TestClient]:
    values = {
        "features_dir": settings.features_dir or settings.feature_repo_dir(),
        "features_project": settings.features_project,
        "features_online_store": settings.features_online_store,
        "features_redis": settings.features_redis,
        "features_registry": settings.features_registry,
        "features_lookup_timeout_seconds": 5.0,
        **overrides,
    }
    app = create_app(api_settings(var, **values), FakeSource({1: model}, {"champion": 1}))
    return ready_client(app, headers=bearer("predict"))


@pytest.fixture(params=["sqlite", "redis"])
def store_settings(
    request: pytest.FixtureRequest, feature_settings: Settings
) -> Iterator[Settings]:
    """A materialised repository (the hand-made events as of AS_OF) on SQLite or Redis."""
    settings = feature_settings.model_copy(
        update={
            "features_online_store": request.param,
            "features_dir": feature_settings.feature_repo_dir(),
        }
    )
    repository = open_repository(settings)
    materialise_hand_events(repository)
    yield settings
    repository.store.teardown()


def expected(model: Pipeline, values: dict[str, float]) -> dict[str, float]:
    """sklearn's probabilities for TEXT with these entity values."""
    row = np.array([[values[name] for name in FEATURES]])
    probabilities = model.predict_proba(model_input([TEXT], row, FEATURES))[0]
    return dict(zip(map(str, model.classes_), probabilities.tolist(), strict=True))


def training_means(model: Pipeline) -> dict[str, float]:
    """The entity columns' means as the fitted StandardScaler learned them."""
    scaler = model.named_steps[COLUMNS_STEP].named_transformers_[ENTITY_BRANCH]
    return dict(zip(FEATURES, scaler.mean_.tolist(), strict=True))


def offline(settings: Settings, user: str, account: str) -> dict[str, float]:
    """What training's point-in-time join gives for the entity at AS_OF (the user by the
    key the store holds)."""
    frame = pd.DataFrame(
        {"user_id": [keyed_hash(user)], "account": [account], "event_timestamp": [AS_OF]}
    )
    joined = historical_features(open_repository(settings), frame)
    return {name: float(joined.loc[0, name]) for name in FEATURES}


def test_compiled_scorer_serves_it(features_model: Pipeline) -> None:
    assert isinstance(make_scorer(features_model), CompiledLinearScorer)


def test_predict_scores_with_the_online_features(
    tmp_path: Path, store_settings: Settings, features_model: Pipeline
) -> None:
    with serve(tmp_path / "var", store_settings, features_model) as client:
        answer = client.post("/predict", json={"text": TEXT, "user_id": "bob", "account": "Delta"})
        unknown = client.post(
            "/predict", json={"text": TEXT, "user_id": "nobody", "account": "Delta"}
        )
        batch = client.post(
            "/predict/batch", json={"texts": [TEXT, TEXT], "user_id": "bob", "account": "Delta"}
        )
        metrics = client.get("/metrics").text
    assert answer.status_code == 200, answer.text
    # Feast, imported now, left the process's Prometheus mode alone (feast_import.py): the
    # counts above come from this worker's own registry.
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    body = answer.json()
    assert body["features"] == {"source": "online", "defaults": {}}
    # Skew: what the server scored with is what training's offline join gives (bob has two
    # tweets, Delta three in the last 24 h), and the probabilities are the scorer's for it.
    values = offline(store_settings, "bob", "Delta")
    assert values["user_tweets"] == 2 and values["account_tweets_24h"] == 3
    assert body["probabilities"] == pytest.approx(expected(features_model, values), abs=1e-12)
    # The batch path sums in another order than one text's: equal within the 2e-15 the
    # compiled scorer promises (tests/unit/test_scorer.py), not to the last bit.
    for item in batch.json()["predictions"]:
        assert item["probabilities"] == pytest.approx(body["probabilities"], rel=0, abs=2e-15)

    # An author without history: zero counts and shares, as training had for one.
    assert unknown.json()["features"] == {
        "source": "defaults",
        "defaults": {"user": "unknown_entity"},
    }
    no_history = {**values, **{n: DEFAULTS[n] for n in FEATURES if n.startswith("user_")}}
    assert unknown.json()["probabilities"] == pytest.approx(
        expected(features_model, no_history), abs=1e-12
    )
    assert (
        'model_feature_defaults_total{entity="user",reason="unknown_entity",variant="champion"} 1.0'
        in metrics
    )


def test_after_the_subject_key_is_rotated_known_users_have_no_history(
    tmp_path: Path, store_settings: Settings, features_model: Pipeline
) -> None:
    """The store keys bob by the hash under the old key: a server hashing with a new one
    asks for another key, which the store does not hold; his account is not hashed."""
    rotated = SecretStr("a-rotated-subject-key-0123456789abcdef")
    with serve(tmp_path / "var", store_settings, features_model, subject_key=rotated) as client:
        answer = client.post("/predict", json={"text": TEXT, "user_id": "bob", "account": "Delta"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["features"] == {
        "source": "defaults",
        "defaults": {"user": "unknown_entity"},
    }
    values = offline(store_settings, "bob", "Delta")
    no_history = {**values, **{n: DEFAULTS[n] for n in FEATURES if n.startswith("user_")}}
    assert answer.json()["probabilities"] == pytest.approx(
        expected(features_model, no_history), abs=1e-12
    )


def test_a_server_in_another_folder_reads_the_jobs_features_through_a_sql_registry(
    tmp_path: Path, feature_settings: Settings, features_model: Pipeline, sql_registry: str
) -> None:
    """As in Kubernetes: the materialising job keeps the repository in a folder only it
    mounts; the API shares the SQL registry (PostgreSQL) and the online store (Redis) with
    it, no file. Without the shared registry the same server has no features at all."""
    job = feature_settings.model_copy(
        update={
            "features_dir": tmp_path / "job" / "features",
            "features_online_store": "redis",
            "features_registry": sql_registry,
        }
    )
    repository = open_repository(job)
    try:
        materialise_hand_events(repository)
        api = tmp_path / "api"
        body = {"text": TEXT, "user_id": "bob", "account": "Delta"}
        with serve(api / "var", job, features_model, features_dir=api / "features") as client:
            shared = client.post("/predict", json=body).json()
        with serve(
            api / "var", job, features_model, features_dir=api / "features", features_registry=None
        ) as client:
            alone = client.post("/predict", json=body).json()
        values = offline(job, "bob", "Delta")
        config = (repository.directory / "feature_store.yaml").read_text(encoding="utf-8")
        # Feast's docs: a job materialising marks its views MATERIALIZING in the registry,
        # and servers refuse such a view unless told to serve it (registry_config). Feast
        # 0.67 skips a write that changes the state alone, so a tag changes too here.
        for view in repository.store.list_feature_views():
            view.state = FeatureViewState.MATERIALIZING
            view.tags = {**view.tags, "test": "materializing"}
            repository.store.registry.apply_feature_view(view, job.features_project, commit=True)
        with serve(api / "var", job, features_model, features_dir=api / "features") as client:
            during = client.post("/predict", json=body).json()
    finally:
        repository.store.teardown()

    assert shared["features"] == {"source": "online", "defaults": {}}
    assert values["user_tweets"] == 2 and values["account_tweets_24h"] == 3
    assert shared["probabilities"] == pytest.approx(expected(features_model, values), abs=1e-12)
    assert during["features"] == shared["features"]
    assert alone["features"] == {
        "source": "defaults",
        "defaults": {"user": "unavailable", "account": "unavailable"},
    }
    # Neither folder holds a registry file; the generated config names the variable that
    # holds the URL, never the URL and its password.
    assert not list(tmp_path.rglob("registry.db"))
    assert "${SENTIMENT_FEATURES_REGISTRY}" in config
    assert make_url(sql_registry).password not in config and sql_registry not in config


def test_without_keys_the_training_means_are_used(
    tmp_path: Path, feature_settings: Settings, features_model: Pipeline
) -> None:
    open_repository(feature_settings)  # an empty repository: nothing materialised
    with serve(tmp_path / "var", feature_settings, features_model) as client:
        answer = client.post("/predict", json={"text": TEXT})
    means = training_means(features_model)
    assert answer.json()["features"] == {
        "source": "defaults",
        "defaults": {"user": "no_key", "account": "no_key"},
    }
    assert answer.json()["probabilities"] == pytest.approx(
        expected(features_model, means), abs=1e-12
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def frozen_redis() -> Iterator[str]:
    """A Redis address whose server accepts connections (the kernel's backlog) and never
    answers: every read hangs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("store", ["down", "frozen"])
def test_a_store_down_or_frozen_gives_defaults_not_errors(
    store: str,
    tmp_path: Path,
    feature_settings: Settings,
    features_model: Pipeline,
    frozen_redis: str,
) -> None:
    open_repository(feature_settings)  # the registry exists; the online store is Redis
    redis = f"127.0.0.1:{closed_port()}" if store == "down" else frozen_redis
    reason = "unavailable" if store == "down" else "timeout"
    with serve(
        tmp_path / "var",
        feature_settings,
        features_model,
        features_online_store="redis",
        features_redis=redis,
        features_lookup_timeout_seconds=0.2,
    ) as client:
        answers = [
            client.post("/predict", json={"text": TEXT, "user_id": "bob", "account": "Delta"})
            for _ in range(3)
        ]
        health = client.get("/health")
        metrics = client.get("/metrics").text
    assert health.status_code == 200
    means = training_means(features_model)
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json()["features"] == {
            "source": "defaults",
            "defaults": {"user": reason, "account": reason},
        }
        assert answer.json()["probabilities"] == pytest.approx(
            expected(features_model, means), abs=1e-12
        )
    for entity in ("account", "user"):
        sample = (
            f'model_feature_defaults_total{{entity="{entity}",reason="{reason}",'
            'variant="champion"} 3.0'
        )
        assert sample in metrics
