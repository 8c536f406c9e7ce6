"""The model: a scikit-learn Pipeline built from a typed config, and the scorers serving uses.

Kept free of tracking and serving concerns so that training, tuning and serving share one
definition of what "the model" is. A fitted pipeline is scored either by sklearn or, much
faster for the few texts of a request, by a compiled table that gives the same numbers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice, repeat
from typing import Literal, Protocol

import numpy as np
from scipy import sparse
from scipy.special import expit
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.extmath import softmax

from sentiment_mlops.config import TrainConfig


def build_pipeline(config: TrainConfig) -> Pipeline:
    """TF-IDF features into a logistic regression, every hyperparameter from `config`.

    The config sections are passed through as keyword arguments, so a key added to
    `VectorizerConfig` or `ClassifierConfig` (and documented in configs/train.yaml) reaches
    sklearn without touching this function; sklearn rejects a key it does not know. Fields
    typed as tuples (`ngram_range`, which sklearn accepts only as a tuple) stay tuples in
    `model_dump()`, even when the YAML gave a list.
    """
    return Pipeline(
        [
            ("tfidf", TfidfVectorizer(**config.vectorizer.model_dump())),
            ("clf", LogisticRegression(**config.classifier.model_dump(), random_state=config.seed)),
        ]
    )


@dataclass(frozen=True)
class LoadedModel:
    """A verified, deserialised model version and what identifies it (the registry's answer)."""

    pipeline: Pipeline
    version: int
    sha256: str
    run_id: str


def plain_vocabulary(pipeline: Pipeline) -> Pipeline:
    """Turn the fitted vocabulary's numpy integer indices into Python ints, in place.

    Feature pruning (min_df, max_features) leaves numpy scalars there; skops writes each one
    as a separate file, which makes saving a 40k-term model take half a minute.
    """
    for _, step in pipeline.steps:
        vocabulary = getattr(step, "vocabulary_", None)
        if isinstance(vocabulary, dict):
            step.vocabulary_ = {term: int(index) for term, index in vocabulary.items()}
    return pipeline


class NotCompilable(ValueError):
    """The pipeline is not one the compiled scorer reproduces exactly; the message says why."""


class Scorer(Protocol):
    """What serving needs from a model: class probabilities for a batch of texts.

    `kind` is "compiled" or "sklearn", for /models and the metrics; implementations are
    immutable once built, so one instance is shared by all requests and threads.
    """

    classes: list[str]
    kind: str

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities of shape (len(texts), len(classes)), columns in `classes` order."""
        ...


class SklearnScorer:
    """Any fitted pipeline with `predict_proba`, scored by sklearn itself: the fallback."""

    kind = "sklearn"

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.classes = [str(label) for label in pipeline.classes_]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(texts), dtype=np.float64)


# How far compiled probabilities may be from the pipeline's on the probe texts before the
# pipeline is handed to sklearn instead. Measured differences are rounding, at most 1.1e-15
# (tests/unit/test_scorer.py asserts 2e-15 on real data); this leaves room for other BLAS
# builds while any real change to the maths (1e-11 and up) is still refused.
TOLERANCE = 1e-12

TfMode = Literal["raw", "sublinear", "binary"]


class CompiledLinearScorer:
    """A fitted TF-IDF + logistic regression pipeline compiled to a term → weights table.

    `Pipeline.predict_proba` spends ~0.4 ms per call on validation and sparse matrices;
    scoring one text needs only its terms. Tokens come from the vectorizer's own analyzer;
    each known term contributes tf * (idf * coef) to the decision, which is divided by the
    norm of the text's tf-idf vector: sklearn's numbers up to rounding (~1e-16).

    The table is numpy arrays indexed through the vectorizer's vocabulary dict (shared, not
    copied). Measured against a dict of per-term tuples: ~2 µs slower on a tweet, ~30%
    faster on a review, and 7 MB instead of 60 MB for IMDB's 440k terms. A batch is scored
    in one vectorised pass, which beat sklearn at every batch size measured, 1 to 1,000
    tweets or reviews (benchmarks/scorer.py): no batch is handed back to sklearn.

    Nothing is mutated after construction (the arrays are read-only), so one instance can
    serve any number of threads. Build it with `from_pipeline`.
    """

    kind = "compiled"

    def __init__(
        self,
        *,
        classes: list[str],
        analyze: Callable[[str], Iterable[str]],
        vocabulary: dict[str, int],
        idf: np.ndarray,
        weights: np.ndarray,
        intercept: np.ndarray,
        tf: TfMode,
        norm: Literal["l1", "l2"] | None,
    ) -> None:
        """Take the table as computed by `from_pipeline`.

        `idf` and `weights` (idf * coef, one column per decision value) have a row per
        vocabulary index and a last row of zeros, where unknown terms point.
        """
        self.classes = classes
        self._analyze = analyze
        self._vocabulary = vocabulary
        self._unknown = len(idf) - 1
        self._idf = _read_only(idf)
        self._weights = _read_only(weights)
        self._intercept = _read_only(intercept)
        self._tf = tf
        self._norm = norm

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline) -> CompiledLinearScorer:
        """Compile a fitted pipeline, then check it against sklearn on probe texts.

        Raises NotCompilable if the pipeline is not TF-IDF into logistic regression, or if
        the probe disagrees (a subclass that changes the maths, an sklearn that changed it).
        """
        vectorizer, classifier = _linear_steps(pipeline)
        coef = classifier.coef_
        coef = np.asarray(coef.toarray() if sparse.issparse(coef) else coef, dtype=np.float64)
        idf = (
            np.asarray(vectorizer.idf_, dtype=np.float64)
            if vectorizer.use_idf
            else np.ones(coef.shape[1])
        )
        tf: TfMode = (
            "binary" if vectorizer.binary else "sublinear" if vectorizer.sublinear_tf else "raw"
        )
        scorer = cls(
            classes=[str(label) for label in classifier.classes_],
            analyze=vectorizer.build_analyzer(),
            vocabulary=vectorizer.vocabulary_,
            idf=np.append(idf, 0.0),
            weights=np.vstack([coef.T * idf[:, None], np.zeros(len(coef))]),
            intercept=np.broadcast_to(
                np.asarray(classifier.intercept_, dtype=np.float64), (len(coef),)
            ),
            tf=tf,
            norm=vectorizer.norm,
        )
        probes = _probe_texts(vectorizer.vocabulary_)
        expected = np.tile(pipeline.predict_proba(probes), (2, 1))
        got = np.vstack(
            [scorer.predict_proba(probes), *(scorer.predict_proba([text]) for text in probes)]
        )
        if got.shape != expected.shape or not np.all(np.abs(got - expected) <= TOLERANCE):
            raise NotCompilable(
                "compiled probabilities differ from the pipeline's on probe texts; "
                "score this pipeline with SklearnScorer"
            )
        return scorer

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """`Pipeline.predict_proba(texts)` up to rounding (measured: at most 1.1e-15)."""
        if isinstance(texts, str):
            raise ValueError("expected a sequence of texts, got a single string")
        if len(texts) == 1:
            (text,) = texts
            decisions = self._decision(text)[np.newaxis, :]
        else:
            decisions = self._decisions(texts)
        if len(self.classes) == 2:
            proba = np.empty((len(decisions), 2))
            expit(decisions[:, 0], out=proba[:, 1])
            np.subtract(1.0, proba[:, 1], out=proba[:, 0])
            return proba
        return softmax(decisions, copy=False)

    def _term_frequencies(self, counts: Collection[int]) -> np.ndarray:
        n_terms = len(counts)
        if self._tf == "binary":
            return np.ones(n_terms)
        tf = np.fromiter(counts, dtype=np.float64, count=n_terms)
        if self._tf == "sublinear":
            np.log(tf, out=tf)
            tf += 1.0
        return tf

    def _decision(self, text: str) -> np.ndarray:
        """Decision values for one text (one per class, or one if binary): no batch overhead."""
        counts = Counter(self._analyze(text))
        rows = np.fromiter(
            map(self._vocabulary.get, counts, repeat(self._unknown)),
            dtype=np.intp,
            count=len(counts),
        )
        tf = self._term_frequencies(counts.values())
        values = tf * self._idf[rows]
        if self._norm == "l2":
            norm = math.sqrt(values @ values)
        elif self._norm == "l1":
            norm = float(np.abs(values).sum())
        else:
            norm = 1.0
        if norm == 0.0:
            # sklearn leaves an all-zero tf-idf row as it is: only the intercept remains.
            return np.array(self._intercept)
        return (tf @ self._weights[rows]) / norm + self._intercept

    def _decisions(self, texts: Sequence[str]) -> np.ndarray:
        """Decision values for a batch: terms of all texts in flat arrays, summed per text."""
        get = self._vocabulary.get
        unknown = repeat(self._unknown)
        rows_list: list[int] = []
        counts_list: list[int] = []
        n_terms: list[int] = []
        for text in texts:
            counts = Counter(self._analyze(text))
            rows_list.extend(map(get, counts, unknown))
            counts_list.extend(counts.values())
            n_terms.append(len(counts))
        rows = np.array(rows_list, dtype=np.intp)
        tf = self._term_frequencies(counts_list)
        values = tf * self._idf[rows]
        text_of_term = np.repeat(np.arange(len(texts)), n_terms)
        if self._norm == "l2":
            norms = np.sqrt(np.bincount(text_of_term, values * values, minlength=len(texts)))
        elif self._norm == "l1":
            norms = np.bincount(text_of_term, np.abs(values), minlength=len(texts))
        else:
            norms = np.ones(len(texts))
        norms[norms == 0.0] = 1.0  # all-zero rows: their sums are 0, only the intercept remains
        weighted = tf[:, np.newaxis] * self._weights[rows]
        sums = np.column_stack(
            [
                np.bincount(text_of_term, weighted[:, k], minlength=len(texts))
                for k in range(weighted.shape[1])
            ]
        )
        return sums / norms[:, np.newaxis] + self._intercept


def make_scorer(pipeline: Pipeline) -> Scorer:
    """The fastest scorer that gives sklearn's numbers: compiled if possible, else sklearn."""
    try:
        return CompiledLinearScorer.from_pipeline(pipeline)
    except NotCompilable:
        return SklearnScorer(pipeline)


def _linear_steps(pipeline: Pipeline) -> tuple[TfidfVectorizer, LogisticRegression]:
    """The vectorizer and classifier of a compilable pipeline, or NotCompilable saying why."""
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        raise NotCompilable("expected a Pipeline of exactly TfidfVectorizer, LogisticRegression")
    vectorizer, classifier = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(vectorizer, TfidfVectorizer):
        raise NotCompilable(f"first step is {type(vectorizer).__name__}, not TfidfVectorizer")
    if not isinstance(classifier, LogisticRegression):
        raise NotCompilable(f"last step is {type(classifier).__name__}, not LogisticRegression")
    if not hasattr(classifier, "coef_") or not hasattr(vectorizer, "vocabulary_"):
        raise NotCompilable("the pipeline is not fitted")
    if vectorizer.input != "content":
        raise NotCompilable(f"vectorizer input={vectorizer.input!r}: only texts are scored")
    if np.dtype(vectorizer.dtype) != np.float64:
        raise NotCompilable(
            f"vectorizer dtype={np.dtype(vectorizer.dtype)}: sklearn's rounding at lower "
            "precision cannot be matched to 1e-12"
        )
    if len(vectorizer.vocabulary_) != classifier.coef_.shape[1]:
        raise NotCompilable("the vocabulary and the classifier disagree on the feature count")
    return vectorizer, classifier


def _probe_texts(vocabulary: dict[str, int]) -> list[str]:
    """Texts with known, repeated and unknown terms, and an empty one, to check a compile."""
    terms = list(islice(vocabulary, 64))
    return ["", " ".join(terms), " ".join(terms[:8] * 3), "qzxv"]


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.array(array)
    array.flags.writeable = False
    return array
