"""The compiled scorer is a drop-in for `Pipeline.predict_proba`: same numbers within 2e-15.

The largest difference measured over every case here is 1.1e-15 (a few units in the last
place, from summing in another order); the tolerance is what the scorer achieves, so a change
to its maths, even a relative drift of 1e-11, fails.

Checked on real datasets with the project's default pipeline, one text at a time (the
request path) and as whole test sets (the batch path), and on vectorizer variants. IMDB's
reviews are checked in tests/model/test_imdb.py, beside the fit they share.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline
from sklearn.utils.extmath import softmax

from sentiment_mlops.config import TrainConfig
from sentiment_mlops.model import build_pipeline, plain_vocabulary
from sentiment_mlops.scorer import (
    CompiledLinearScorer,
    NotCompilable,
    SklearnScorer,
    make_scorer,
)

TOLERANCE = 2e-15
NO_KNOWN_TERMS = ["", "   ", "!!! ?? ...", "a b c", "qzxvkw jjjjqqq xxyyzzq"]


def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    frame = pd.read_csv(path, keep_default_na=False)
    return frame["text"].to_numpy(dtype=object), frame["label"].to_numpy(dtype=object)


def fit_default(texts: np.ndarray, labels: np.ndarray, **params: Any) -> Pipeline:
    """The pipeline `sentiment train` fits, with `params` (set_params names) changed."""
    pipeline = build_pipeline(TrainConfig()).set_params(**params)
    return plain_vocabulary(pipeline.fit(texts, labels))


def assert_same_as_sklearn(pipeline: Pipeline, texts: np.ndarray | list[str]) -> None:
    """Per text and as one batch, the compiled scorer gives the pipeline's probabilities."""
    scorer = CompiledLinearScorer.from_pipeline(pipeline)
    expected = pipeline.predict_proba(texts)
    batch = scorer.predict_proba(texts)
    one_by_one = np.vstack([scorer.predict_proba([text]) for text in texts])
    assert batch.dtype == one_by_one.dtype == np.float64
    assert batch.shape == one_by_one.shape == expected.shape
    assert np.abs(batch - expected).max() < TOLERANCE
    assert np.abs(one_by_one - expected).max() < TOLERANCE


@pytest.fixture(scope="module")
def airline(shared_data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three-class tweets: 80% to train on, the rest to score (train, test texts; labels)."""
    texts, labels = read(shared_data / "twitter-us-airline-sentiment" / "all.csv")
    train_x, test_x, train_y, test_y = train_test_split(
        texts, labels, test_size=0.2, random_state=0, stratify=labels
    )
    return train_x, test_x, train_y, test_y


@pytest.fixture(scope="module")
def airline_model(airline: tuple[np.ndarray, ...]) -> Pipeline:
    train_x, _, train_y, _ = airline
    return fit_default(train_x, train_y)


@pytest.fixture(scope="module")
def sst2_model(shared_data: Path) -> Pipeline:
    return fit_default(*read(shared_data / "sst2-glue" / "train.csv"))


def test_sst2_glue_test_set(shared_data: Path, sst2_model: Pipeline) -> None:
    texts, _ = read(shared_data / "sst2-glue" / "test.csv")
    assert_same_as_sklearn(sst2_model, texts)


def test_airline_three_classes(airline: tuple[np.ndarray, ...], airline_model: Pipeline) -> None:
    assert_same_as_sklearn(airline_model, airline[1])


@pytest.mark.parametrize(
    "params",
    [
        {"tfidf__sublinear_tf": False},
        {"tfidf__ngram_range": (1, 1)},
        {"tfidf__norm": "l1"},
        {"tfidf__norm": None},
        {"tfidf__use_idf": False},
        {"tfidf__binary": True},
        {"tfidf__binary": True, "tfidf__norm": None},
        {"tfidf__lowercase": False},
        {"tfidf__stop_words": "english"},
        {"tfidf__strip_accents": "unicode"},
        {"tfidf__analyzer": "char_wb", "tfidf__ngram_range": (2, 4)},
        {"clf__fit_intercept": False},
    ],
    ids=lambda params: ",".join(f"{k.split('__')[1]}={v}" for k, v in params.items()),
)
def test_vectorizer_and_classifier_variants(
    airline: tuple[np.ndarray, ...], params: dict[str, Any]
) -> None:
    train_x, test_x, train_y, _ = airline
    model = fit_default(train_x[:4_000], train_y[:4_000], **params)
    assert_same_as_sklearn(model, [*test_x[:300], *NO_KNOWN_TERMS])


def test_texts_without_known_terms_score_the_intercept_alone(
    sst2_model: Pipeline, airline_model: Pipeline
) -> None:
    assert_same_as_sklearn(sst2_model, NO_KNOWN_TERMS)
    binary = CompiledLinearScorer.from_pipeline(sst2_model).predict_proba(NO_KNOWN_TERMS)
    positive = expit(sst2_model[-1].intercept_[0])
    np.testing.assert_array_equal(binary, [[1 - positive, positive]] * len(NO_KNOWN_TERMS))

    assert_same_as_sklearn(airline_model, NO_KNOWN_TERMS)
    three = CompiledLinearScorer.from_pipeline(airline_model).predict_proba(NO_KNOWN_TERMS)
    intercept_only = softmax(airline_model[-1].intercept_[np.newaxis, :])
    np.testing.assert_allclose(three, np.repeat(intercept_only, len(NO_KNOWN_TERMS), axis=0))


def test_classes_follow_the_pipeline(airline_model: Pipeline) -> None:
    scorer = make_scorer(airline_model)
    assert scorer.kind == "compiled"
    assert scorer.classes == [str(label) for label in airline_model.classes_]
    assert scorer.classes == ["negative", "neutral", "positive"]


def test_empty_batch_and_single_string(airline_model: Pipeline) -> None:
    scorer = CompiledLinearScorer.from_pipeline(airline_model)
    assert scorer.predict_proba([]).shape == (0, 3)
    with pytest.raises(ValueError, match="single string"):
        scorer.predict_proba("a text, not a list of texts")


def test_concurrent_scoring_matches_serial(
    airline: tuple[np.ndarray, ...], airline_model: Pipeline
) -> None:
    scorer = CompiledLinearScorer.from_pipeline(airline_model)
    texts = list(airline[1][:400])
    serial = scorer.predict_proba(texts)
    with ThreadPoolExecutor(max_workers=8) as pool:
        singles = list(pool.map(lambda text: scorer.predict_proba([text]), texts))
        batches = list(
            pool.map(scorer.predict_proba, [texts[i : i + 50] for i in range(0, 400, 50)])
        )
    np.testing.assert_allclose(np.vstack(singles), serial, rtol=0, atol=TOLERANCE)
    np.testing.assert_array_equal(np.vstack(batches), serial)


class TemperedLogisticRegression(LogisticRegression):
    """A classifier whose probabilities are not the linear model's: must not be compiled."""

    def predict_proba(self, X: Any) -> np.ndarray:
        return softmax(self.decision_function(X)[:, np.newaxis] * [[-0.25, 0.25]])


@pytest.mark.parametrize(
    ("classifier", "reason"),
    [
        (MultinomialNB(), "MultinomialNB: only LogisticRegression"),
        (TemperedLogisticRegression(), "differ from the pipeline's on probe texts"),
    ],
    ids=["naive-bayes", "changed-predict-proba"],
)
def test_unsupported_pipelines_fall_back_to_sklearn(
    shared_data: Path,
    classifier: MultinomialNB | LogisticRegression,
    reason: str,
) -> None:
    texts, labels = read(shared_data / "sst2-sentence" / "train.csv")
    pipeline = Pipeline([("tfidf", TfidfVectorizer(min_df=2)), ("clf", classifier)])
    pipeline.fit(texts, labels)
    with pytest.raises(NotCompilable, match=reason):
        CompiledLinearScorer.from_pipeline(pipeline)
    scorer = make_scorer(pipeline)
    assert isinstance(scorer, SklearnScorer)
    assert scorer.kind == "sklearn"
    assert re.search(reason, scorer.note)
    assert scorer.classes == list(pipeline.classes_)
    np.testing.assert_array_equal(
        scorer.predict_proba(texts[:200]), pipeline.predict_proba(texts[:200])
    )


def test_lower_precision_vectorizer_is_refused(shared_data: Path) -> None:
    texts, labels = read(shared_data / "sst2-sentence" / "train.csv")
    model = fit_default(texts, labels, tfidf__dtype=np.float32)
    with pytest.raises(NotCompilable, match="float32"):
        CompiledLinearScorer.from_pipeline(model)


def test_a_relative_drift_of_1e_11_is_caught(
    airline: tuple[np.ndarray, ...], airline_model: Pipeline
) -> None:
    """The tolerance has teeth: a scorer whose weights are off by one part in 1e11 fails."""
    scorer = CompiledLinearScorer.from_pipeline(airline_model)
    (table,) = scorer._tables
    drifted = CompiledLinearScorer(
        classes=scorer.classes,
        preprocess=None,
        tables=[replace(table, weights=table.weights * (1 + 1e-11))],
        intercept=scorer._intercept,
        link=scorer._link,
    )
    texts = airline[1][:500]
    expected = airline_model.predict_proba(texts)
    assert np.abs(scorer.predict_proba(texts) - expected).max() <= TOLERANCE
    assert np.abs(drifted.predict_proba(texts) - expected).max() > TOLERANCE
