"""What the workers compute: the pipeline cut into stages, and which trials share a stage.

A trial's pipeline is three stages, the parts `model.build_pipeline` composes:
`build_preprocessor` (normalising, negation marking), `build_vectorizer` (tokenising, word and
character n-grams, document frequencies, TF-IDF weights) and `build_classifier` (logistic
regression, NB scaling, calibration). Most of a trial's time is in the
first two, and most trials of a search differ only in the last: every trial whose
preprocessing and vectorizer settings are equal would compute the same matrices. So each
stage is a task of its own, keyed by the config sections it reads (`stage_key`), and trials
with equal keys depend on the same task:

- preprocessing: one task per preprocessing key, over all the training texts. The
  preprocessor is stateless (`text.TextPreprocessor` learns nothing in `fit`) and maps each
  text on its own, so transforming the validation texts of every fold together with their
  training texts leaks nothing.
- features: one task per (fold, preprocessing key, vectorizer key). The vectorizer is fitted
  on the fold's training part only and then transforms its validation part, exactly as a
  pipeline inside cross-validation would: the validation texts never reach its vocabulary or
  document frequencies.
- classifier: one task per (trial, fold), fitted on the fold's training matrix, scored on its
  validation matrix. NB scaling and calibration learn from the labels, so they belong here,
  inside the fold's training part, never in a shared stage.

Which config sections belong to which stage is listed here once; a section not yet in
`TrainConfig` is skipped, one that is added falls to the classifier stage unless listed.

Every function here runs on a Dask worker and returns a plain value: an expected failure
(a parameter combination sklearn refuses) comes back as a `Failure`, so Dask's retries are
left for lost workers and the search records the error and goes on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse
from sklearn.metrics import accuracy_score, f1_score
from threadpoolctl import threadpool_limits

from sentiment_mlops import model
from sentiment_mlops.config import TrainConfig

PREPROCESS_SECTIONS = ("preprocess",)
FEATURE_SECTIONS = ("vectorizer", "char_vectorizer")
Metric = Literal["accuracy", "macro_f1"]


@dataclass(frozen=True)
class Failure:
    """A stage that raised: which one, and the error, for the trial's record."""

    stage: str
    error: str

    @classmethod
    def of(cls, stage: str, exc: BaseException) -> Failure:
        return cls(stage, f"{stage}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Corpus:
    """The training texts and labels, sent to every worker once."""

    texts: np.ndarray  # object array of str: indexable by a fold's row numbers
    labels: np.ndarray

    @classmethod
    def of(cls, texts: Sequence[str], labels: Sequence[str] | np.ndarray) -> Corpus:
        return cls(np.asarray(texts, dtype=object), np.asarray(labels, dtype=object))


@dataclass(frozen=True)
class Fold:
    """Row numbers of one cross-validation fold's training and validation parts."""

    number: int
    train: np.ndarray
    validation: np.ndarray


@dataclass(frozen=True)
class Features:
    """A fold's matrices from one vectorizer fitted on its training part."""

    train: sparse.csr_matrix
    train_labels: np.ndarray
    validation: sparse.csr_matrix
    validation_labels: np.ndarray


@dataclass(frozen=True)
class FoldScore:
    """One trial on one fold: its score, or the error that stopped it, and where it ran."""

    trial: int
    fold: int
    score: float | None
    seconds: float
    worker: str
    error: str | None = None


def stage_key(config: TrainConfig, sections: Sequence[str]) -> str:
    """The settings of `sections` as canonical JSON: equal keys, equal stage output."""
    dumped = config.model_dump(mode="json")
    return json.dumps({s: dumped[s] for s in sections if s in dumped}, sort_keys=True)


def preprocessing_key(config: TrainConfig) -> str:
    return stage_key(config, PREPROCESS_SECTIONS)


def features_key(config: TrainConfig) -> str:
    return stage_key(config, PREPROCESS_SECTIONS + FEATURE_SECTIONS)


def preprocess(corpus: Corpus, config: TrainConfig) -> Corpus | Failure:
    """The corpus with every text preprocessed as the trial's config says (shared stage)."""
    preprocessor = model.build_preprocessor(config)
    if preprocessor is None:
        return corpus
    try:
        texts = preprocessor.transform(list(corpus.texts))
    except Exception as exc:  # a setting sklearn or our transformer refuses
        return Failure.of("preprocessing", exc)
    return Corpus.of(texts, corpus.labels)


def featurize(corpus: Corpus | Failure, fold: Fold, config: TrainConfig) -> Features | Failure:
    """Fit the vectorizer on the fold's training texts, transform both parts (shared stage)."""
    if isinstance(corpus, Failure):
        return corpus
    vectorizer = model.build_vectorizer(config)
    try:
        with threadpool_limits(limits=1):
            train = vectorizer.fit_transform(list(corpus.texts[fold.train]))
            validation = vectorizer.transform(list(corpus.texts[fold.validation]))
    except Exception as exc:
        return Failure.of("vectorizer", exc)
    return Features(
        sparse.csr_matrix(train),
        corpus.labels[fold.train],
        sparse.csr_matrix(validation),
        corpus.labels[fold.validation],
    )


def score_fold(
    features: Features | Failure, config: TrainConfig, trial: int, fold: int, metric: Metric
) -> FoldScore:
    """Fit the trial's classifier on a fold's training matrix and score its validation part.

    BLAS is held to one thread: a worker started by hand (`dask worker`) does not have the
    environment `runtime.configure_process` gives ours, and one thread per core in each of
    several single-threaded workers made fitting several times slower.
    """
    worker = _worker_address()
    if isinstance(features, Failure):
        return FoldScore(trial, fold, None, 0.0, worker, features.error)
    classifier = model.build_classifier(config)
    started = time.perf_counter()
    try:
        with threadpool_limits(limits=1):
            fitted = classifier.fit(features.train, features.train_labels)
            predicted = fitted.predict(features.validation)
    except Exception as exc:
        failure = Failure.of("classifier", exc)
        return FoldScore(trial, fold, None, time.perf_counter() - started, worker, failure.error)
    truth = features.validation_labels
    if metric == "accuracy":
        score = accuracy_score(truth, predicted)
    else:
        score = f1_score(truth, predicted, average="macro")
    return FoldScore(trial, fold, float(score), time.perf_counter() - started, worker)


def _worker_address() -> str:
    from distributed import get_worker

    try:
        return str(get_worker().address)
    except ValueError:  # called outside a worker (tests of this module)
        return "local"
