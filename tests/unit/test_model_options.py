"""Every pipeline option: how it is built, that it compiles to sklearn's numbers on real data
(per text and per batch), that calibration calibrates, and that the registry saves and loads
it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from sentiment_mlops.config import Settings, TrainConfig
from sentiment_mlops.data import LabelledTexts, Split
from sentiment_mlops.evaluate import evaluate
from sentiment_mlops.model import build_pipeline, plain_vocabulary
from sentiment_mlops.nb_scaling import NBLogisticRegression
from sentiment_mlops.registry import Registry
from sentiment_mlops.scorer import CompiledLinearScorer, make_scorer
from sentiment_mlops.text import TextPreprocessor
from sentiment_mlops.train import DataSpec, TrainResult, fit

# The largest difference measured over these cases is 1.1e-13 (isotonic calibration, whose
# steep pieces magnify the decision's last-place rounding); the issue asks for 1e-9.
TOLERANCE = 1e-12

OPTIONS: dict[str, dict[str, Any]] = {
    "normalise": {"preprocess": {"normalise": True}},
    "negation": {"preprocess": {"negation": True}},
    "word-1-3+char": {"vectorizer": {"ngram_range": [1, 3]}, "char_vectorizer": {"enabled": True}},
    "binary-tf": {
        "vectorizer": {"binary": True, "use_idf": False, "norm": None},
        "char_vectorizer": {"enabled": True, "binary": True, "norm": "l1", "weight": 0.4},
    },
    "nb-scaling": {"nb_scaling": {"enabled": True, "beta": 0.25}},
    "sigmoid": {"calibration": {"method": "sigmoid", "cv": 3}},
    "isotonic": {"calibration": {"method": "isotonic", "cv": 3}},
    "everything": {
        "preprocess": {"normalise": True, "negation": True},
        "char_vectorizer": {"enabled": True, "ngram_range": [3, 4]},
        "nb_scaling": {"enabled": True, "alpha": 0.5, "beta": 0.5},
        "calibration": {"method": "sigmoid", "cv": 3},
    },
}


def read(path: Path, rows: slice) -> tuple[list[str], list[str]]:
    frame = pd.read_csv(path, keep_default_na=False).iloc[rows]
    return frame["text"].tolist(), frame["label"].tolist()


def fitted(options: dict[str, Any], texts: list[str], labels: list[str]) -> Pipeline:
    return plain_vocabulary(build_pipeline(TrainConfig.model_validate(options)).fit(texts, labels))


def assert_compiled_equals_sklearn(pipeline: Pipeline, texts: list[str]) -> None:
    scorer = make_scorer(pipeline)
    assert isinstance(scorer, CompiledLinearScorer), scorer.note
    expected = pipeline.predict_proba(texts)
    batch = scorer.predict_proba(texts)
    one_by_one = np.vstack([scorer.predict_proba([text]) for text in texts])
    assert np.abs(batch - expected).max() <= TOLERANCE
    assert np.abs(one_by_one - expected).max() <= TOLERANCE


@pytest.fixture(scope="module")
def tweets(shared_data: Path) -> tuple[list[str], list[str]]:
    """3,000 airline tweets (three classes; URLs, mentions, entities)."""
    return read(shared_data / "twitter-us-airline-sentiment" / "all.csv", slice(0, 3000))


@pytest.fixture(scope="module")
def sentences(shared_data: Path) -> tuple[list[str], list[str]]:
    """3,000 SST-2 sentences (binary; negations)."""
    return read(shared_data / "sst2-sentence" / "train.csv", slice(0, 3000))


def test_default_config_builds_the_plain_pipeline() -> None:
    pipeline = build_pipeline(TrainConfig())
    assert [name for name, _ in pipeline.steps] == ["tfidf", "clf"]
    assert isinstance(pipeline["tfidf"], TfidfVectorizer)
    assert type(pipeline["clf"]) is LogisticRegression


def test_every_option_builds_its_step() -> None:
    pipeline = build_pipeline(TrainConfig.model_validate(OPTIONS["everything"]))
    assert [name for name, _ in pipeline.steps] == ["text", "tfidf", "clf"]
    assert pipeline["text"].get_params() == {"normalise": True, "negation": True}
    union = pipeline["tfidf"]
    assert isinstance(union, FeatureUnion)
    word, char = (member for _, member in union.transformer_list)
    assert (word.analyzer, char.analyzer, char.ngram_range) == ("word", "char_wb", (3, 4))
    calibrated = pipeline["clf"]
    assert isinstance(calibrated, CalibratedClassifierCV)
    assert (calibrated.method, calibrated.cv.n_splits, calibrated.ensemble) == ("sigmoid", 3, False)
    assert isinstance(calibrated.estimator, NBLogisticRegression)
    assert (calibrated.estimator.alpha, calibrated.estimator.beta) == (0.5, 0.5)


def test_term_weighting_options_reach_both_vectorizers() -> None:
    union = build_pipeline(TrainConfig.model_validate(OPTIONS["binary-tf"]))["tfidf"]
    word, char = (member for _, member in union.transformer_list)
    assert (word.binary, word.use_idf, word.norm) == (True, False, None)
    assert (char.binary, char.use_idf, char.norm) == (True, True, "l1")
    assert union.transformer_weights == {"char": 0.4}
    plain = build_pipeline(TrainConfig.model_validate(OPTIONS["word-1-3+char"]))["tfidf"]
    assert plain.transformer_weights is None


@pytest.mark.parametrize("option", list(OPTIONS))
def test_each_option_compiles_to_sklearn_numbers_on_tweets(
    option: str, tweets: tuple[list[str], list[str]]
) -> None:
    texts, labels = tweets
    pipeline = fitted(OPTIONS[option], texts[:2500], labels[:2500])
    assert_compiled_equals_sklearn(pipeline, [*texts[2500:], "", "!!!", "qzxv"])


@pytest.mark.parametrize("option", ["negation", "word-1-3+char", "isotonic", "everything"])
def test_binary_options_compile_to_sklearn_numbers_on_sentences(
    option: str, sentences: tuple[list[str], list[str]]
) -> None:
    texts, labels = sentences
    pipeline = fitted(OPTIONS[option], texts[:2500], labels[:2500])
    assert_compiled_equals_sklearn(pipeline, texts[2500:])


def test_an_uncompilable_preprocessing_step_is_named_and_served_by_sklearn(
    tweets: tuple[list[str], list[str]],
) -> None:
    class Shouting(TextPreprocessor):
        def process(self, text: str) -> str:
            return text.upper()

        def transform(self, texts: Any) -> list[str]:
            return [text[::-1] for text in texts]

    texts, labels = tweets
    pipeline = fitted({"preprocess": {"normalise": True}}, texts[:1000], labels[:1000])
    pipeline.steps[0] = ("text", Shouting())
    scorer = make_scorer(pipeline)
    assert scorer.kind == "sklearn"
    assert "differ from the pipeline's on probe texts" in scorer.note
    np.testing.assert_array_equal(
        scorer.predict_proba(texts[:50]), pipeline.predict_proba(texts[:50])
    )


def test_calibration_lowers_the_calibration_error_on_a_skewed_set(shared_data: Path) -> None:
    """Negative and positive airline tweets (4:1), with a weakly regularised model whose raw
    probabilities are overconfident: sigmoid calibration must bring ECE down by 40% or more
    (measured: 0.056 -> 0.025)."""
    texts, labels = read(shared_data / "twitter-us-airline-sentiment" / "all.csv", slice(None))
    kept = [(t, y) for t, y in zip(texts, labels, strict=True) if y != "neutral"][:6000]
    train, test = kept[:4000], kept[4000:]
    base = {"classifier": {"C": 100.0}}
    reports = {}
    for name, options in {"raw": base, "sigmoid": {**base, **OPTIONS["sigmoid"]}}.items():
        pipeline = fitted(options, [t for t, _ in train], [y for _, y in train])
        proba = pipeline.predict_proba([t for t, _ in test])
        reports[name] = evaluate([y for _, y in test], proba, list(pipeline.classes_))
    assert reports["sigmoid"].ece < 0.6 * reports["raw"].ece


def test_the_registry_saves_and_loads_every_option(
    tmp_path: Path, clean_env: None, tweets: tuple[list[str], list[str]]
) -> None:
    texts, labels = tweets
    pipeline = fitted(OPTIONS["everything"], texts[:1000], labels[:1000])
    registry = Registry(Settings(var_dir=tmp_path / "var"))
    info = registry.register(pipeline, params={}, metrics={}, tags={"data_source": "unit"})
    loaded = registry.load(info.version).pipeline
    expected = pipeline.predict_proba(texts[1000:1200])
    np.testing.assert_array_equal(loaded.predict_proba(texts[1000:1200]), expected)
    assert make_scorer(loaded).kind == "compiled"
    # users' own MLflow tooling reads it too: the artifact names the project's trusted types
    import mlflow

    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    try:
        by_mlflow = mlflow.sklearn.load_model(f"models:/sentiment/{info.version}")
    finally:
        mlflow.set_tracking_uri("")
        mlflow.set_registry_uri("")
    np.testing.assert_array_equal(by_mlflow.predict_proba(texts[1000:1200]), expected)


@pytest.fixture(scope="module")
def phrases_calibrated_on_sentences(shared_data: Path) -> TrainResult:
    """SST-2's kind of data: trained on 8,000 GLUE phrases, calibrated on the 872 validation
    sentences, tested on 600 test sentences."""
    glue = shared_data / "sst2-glue"
    config = TrainConfig.model_validate({"calibration": {"method": "sigmoid", "cv": 3}})
    train, validation, test = (
        LabelledTexts(*read(glue / name, rows), name)
        for name, rows in [
            ("train.csv", slice(0, 8000)),
            ("validation.csv", slice(None)),
            ("test.csv", slice(0, 600)),
        ]
    )
    return fit(Split(train, test, validation), config, DataSpec())


def test_calibration_on_validation_data_fits_only_the_calibrator_there(
    phrases_calibrated_on_sentences: TrainResult,
) -> None:
    result = phrases_calibrated_on_sentences
    calibrated = result.pipeline["clf"]
    assert isinstance(calibrated, CalibratedClassifierCV)
    (member,) = calibrated.calibrated_classifiers_
    assert isinstance(member.estimator, FrozenEstimator)
    # the classifier is the one an uncalibrated fit on all the training rows gives
    plain = fitted({}, result.split.train.texts, result.split.train.labels)["clf"]
    np.testing.assert_array_equal(member.estimator.estimator.coef_, plain.coef_)
    # and the calibrator is Platt's fit on the validation rows' decisions
    validation = result.split.validation
    assert validation is not None
    decisions = result.pipeline[:-1].transform(validation.texts) @ plain.coef_.ravel()
    expected = _SigmoidCalibration().fit(
        decisions + plain.intercept_[0], np.asarray(validation.labels) == "positive"
    )
    (sigmoid,) = member.calibrators
    np.testing.assert_allclose([sigmoid.a_, sigmoid.b_], [expected.a_, expected.b_], rtol=1e-9)
    assert result.params["data.n_validation"] == len(validation)
    assert result.tags["validation_fingerprint"] == validation.fingerprint()


def test_calibration_on_validation_data_compiles_and_round_trips(
    tmp_path: Path, clean_env: None, phrases_calibrated_on_sentences: TrainResult
) -> None:
    pipeline = phrases_calibrated_on_sentences.pipeline
    texts = phrases_calibrated_on_sentences.split.test.texts
    assert_compiled_equals_sklearn(pipeline, texts)
    registry = Registry(Settings(var_dir=tmp_path / "var"))
    info = registry.register(pipeline, params={}, metrics={}, tags={"data_source": "unit"})
    loaded = registry.load(info.version).pipeline
    np.testing.assert_array_equal(loaded.predict_proba(texts), pipeline.predict_proba(texts))
    assert make_scorer(loaded).kind == "compiled"
