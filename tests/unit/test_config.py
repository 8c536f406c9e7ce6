from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from sentiment_mlops.config import (
    ClassifierConfig,
    ConfigError,
    Settings,
    TrainConfig,
    VectorizerConfig,
    describe_settings_error,
    load_train_config,
)
from sentiment_mlops.model import build_pipeline

ROOT = Path(__file__).resolve().parents[2]


def test_documented_defaults_match_the_code() -> None:
    """configs/train.yaml documents the defaults: it must not drift from them."""
    assert load_train_config(ROOT / "configs" / "train.yaml") == TrainConfig()


def test_every_config_key_reaches_the_pipeline() -> None:
    """Each vectorizer and classifier key is passed to sklearn as it is, and the result fits."""
    config = load_train_config(ROOT / "configs" / "train.yaml")
    pipeline = build_pipeline(config)
    tfidf = pipeline.named_steps["tfidf"].get_params()
    clf = pipeline.named_steps["clf"].get_params()
    assert {k: tfidf[k] for k in VectorizerConfig.model_fields} == config.vectorizer.model_dump()
    assert {k: clf[k] for k in ClassifierConfig.model_fields} == config.classifier.model_dump()
    assert clf["random_state"] == config.seed
    pipeline.fit(["good film", "bad film", "fine film", "dull film"], ["p", "n", "p", "n"])


def test_unknown_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"vectorizer": {"ngram": [1, 2]}}))
    with pytest.raises(ConfigError, match=r"c.yaml: vectorizer.ngram"):
        load_train_config(path)


def test_invalid_value_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("classifier:\n  C: -1\n")
    with pytest.raises(ConfigError, match=r"classifier\.C"):
        load_train_config(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_train_config(tmp_path / "nope.yaml")


def test_flat_params_are_dotted() -> None:
    params = TrainConfig().flat_params()
    assert params["classifier.C"] == 10.0
    assert params["vectorizer.ngram_range"] == (1, 2)
    assert params["seed"] == 42


def test_tracking_uri_defaults_to_sqlite_under_var(tmp_path: Path, clean_env: None) -> None:
    settings = Settings(var_dir=tmp_path)
    assert settings.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_mlflow_tracking_uri_is_honoured(monkeypatch: pytest.MonkeyPatch, clean_env: None) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql+psycopg2://u@h/db")
    assert Settings().tracking_uri() == "postgresql+psycopg2://u@h/db"


def test_training_accepts_texts_at_least_as_long_as_the_api(clean_env: None) -> None:
    assert Settings().train_text_limit() == 100_000
    assert Settings(max_text_chars=250_000).train_text_limit() == 250_000
    assert Settings(max_train_text_chars=8000).train_text_limit() == 8000
    with pytest.raises(ValidationError) as caught:
        Settings(max_train_text_chars=4999)
    assert describe_settings_error(caught.value) == (
        "SENTIMENT_MAX_TRAIN_TEXT_CHARS: must be at least SENTIMENT_MAX_TEXT_CHARS (5000): "
        "a text the API accepts must be one training accepts"
    )
    assert Settings().max_classes == 100
    with pytest.raises(ValidationError, match="max_classes"):
        Settings(max_classes=1)
