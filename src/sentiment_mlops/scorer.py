"""Scoring a fitted pipeline: by sklearn, or much faster by a compiled table with the same
numbers.

`Pipeline.predict_proba` spends ~0.4 ms per call on validation and sparse matrices; scoring
one text needs only its terms. Every pipeline model.py builds is linear in its TF-IDF
features (and standardised entity features, if it has them) followed by a monotone map, so
it compiles to: the same text preprocessing, per vectorizer a term -> (idf, idf * coef)
table, the entity columns' mean, scale and coef, and the map (logistic, softmax,
one-vs-rest, or the fitted calibrators). A pipeline that is anything else, or whose compiled numbers
disagree with sklearn's on probe texts, is scored by sklearn, and the reason is kept.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice, repeat
from typing import Any, Literal, Protocol

import numpy as np
from scipy import sparse
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.extmath import softmax

from sentiment_mlops.model import (
    ENTITY_BRANCH,
    entity_features,
    entity_means,
    model_input,
    text_branch,
)
from sentiment_mlops.nb_scaling import NBLogisticRegression
from sentiment_mlops.text import TextPreprocessor

log = logging.getLogger(__name__)


class NotCompilable(ValueError):
    """The pipeline is not one the compiled scorer reproduces exactly; the message says why."""


class Scorer(Protocol):
    """What serving needs from a model: class probabilities for a batch of texts.

    `kind` is "compiled" or "sklearn", for /models and the metrics; `note` says why a model
    is not compiled ("" when it is); `entity_features` names the numeric columns a model
    trained with entity features needs beside each text (() for a text-only model), and
    `entity_means` their training means (what serving uses when it cannot read them).
    Implementations are immutable once built, so one instance is shared by all requests and
    threads.
    """

    classes: list[str]
    kind: str
    note: str
    entity_features: tuple[str, ...]
    entity_means: tuple[float, ...]

    def predict_proba(self, texts: Sequence[str], entities: np.ndarray | None = None) -> np.ndarray:
        """Probabilities of shape (len(texts), len(classes)), columns in `classes` order;
        `entities` (len(texts), len(entity_features)) when the model has entity features."""
        ...


class SklearnScorer:
    """Any fitted pipeline with `predict_proba`, scored by sklearn itself: the fallback."""

    kind = "sklearn"

    def __init__(self, pipeline: Pipeline, note: str = "") -> None:
        self.pipeline = pipeline
        self.classes = [str(label) for label in pipeline.classes_]
        self.note = note
        self.entity_features = entity_features(pipeline)
        self.entity_means = entity_means(pipeline)

    def predict_proba(self, texts: Sequence[str], entities: np.ndarray | None = None) -> np.ndarray:
        features = model_input(texts, entities, self.entity_features)
        return np.asarray(self.pipeline.predict_proba(features), dtype=np.float64)


# How far compiled probabilities may be from the pipeline's on the probe texts before the
# pipeline is handed to sklearn instead. Measured differences are rounding, at most 1.1e-15
# for the default pipeline (tests/unit/test_scorer.py asserts 2e-15 on real data); a
# calibrator's slope can magnify the decision's rounding, so this leaves three orders more,
# while any real change to the maths (1e-6 and up) is still refused.
TOLERANCE = 1e-12

TfMode = Literal["raw", "sublinear", "binary"]
# A pipeline's vectorizers in feature order, each with the weight its FeatureUnion gives it.
Vectorizers = list[tuple[TfidfVectorizer, float]]


@dataclass(frozen=True)
class TermTable:
    """One vectorizer compiled: its analyzer, and per vocabulary index the idf and the
    idf-scaled weights (one column per decision value), plus a last all-zero row where
    unknown terms point. Arrays are read-only."""

    analyze: Callable[[str], Iterable[str]]
    vocabulary: dict[str, int]
    idf: np.ndarray
    weights: np.ndarray
    tf: TfMode
    norm: Literal["l1", "l2"] | None

    @property
    def unknown(self) -> int:
        return len(self.idf) - 1

    @classmethod
    def compile(cls, vectorizer: TfidfVectorizer, coef: np.ndarray) -> TermTable:
        """`coef` holds the classifier's weights for this vectorizer's features only."""
        idf = (
            np.asarray(vectorizer.idf_, dtype=np.float64)
            if vectorizer.use_idf
            else np.ones(coef.shape[1])
        )
        tf: TfMode = (
            "binary" if vectorizer.binary else "sublinear" if vectorizer.sublinear_tf else "raw"
        )
        return cls(
            analyze=vectorizer.build_analyzer(),
            vocabulary=vectorizer.vocabulary_,
            idf=_read_only(np.append(idf, 0.0)),
            weights=_read_only(np.vstack([coef.T * idf[:, None], np.zeros(len(coef))])),
            tf=tf,
            norm=vectorizer.norm,
        )

    def term_frequencies(self, counts: Collection[int]) -> np.ndarray:
        n_terms = len(counts)
        if self.tf == "binary":
            return np.ones(n_terms)
        tf = np.fromiter(counts, dtype=np.float64, count=n_terms)
        if self.tf == "sublinear":
            np.log(tf, out=tf)
            tf += 1.0
        return tf

    def decision(self, text: str) -> np.ndarray:
        """This table's share of one text's decision values: no batch overhead."""
        counts = Counter(self.analyze(text))
        rows = np.fromiter(
            map(self.vocabulary.get, counts, repeat(self.unknown)),
            dtype=np.intp,
            count=len(counts),
        )
        tf = self.term_frequencies(counts.values())
        values = tf * self.idf[rows]
        if self.norm == "l2":
            norm = math.sqrt(values @ values)
        elif self.norm == "l1":
            norm = float(np.abs(values).sum())
        else:
            norm = 1.0
        if norm == 0.0:
            # sklearn leaves an all-zero tf-idf row as it is: it adds nothing.
            return np.zeros(self.weights.shape[1])
        return np.asarray((tf @ self.weights[rows]) / norm)

    def decisions(self, texts: Sequence[str]) -> np.ndarray:
        """This table's share of a batch's decisions: all terms in flat arrays, summed per
        text."""
        get = self.vocabulary.get
        unknown = repeat(self.unknown)
        rows_list: list[int] = []
        counts_list: list[int] = []
        n_terms: list[int] = []
        for text in texts:
            counts = Counter(self.analyze(text))
            rows_list.extend(map(get, counts, unknown))
            counts_list.extend(counts.values())
            n_terms.append(len(counts))
        rows = np.array(rows_list, dtype=np.intp)
        tf = self.term_frequencies(counts_list)
        values = tf * self.idf[rows]
        text_of_term = np.repeat(np.arange(len(texts)), n_terms)
        if self.norm == "l2":
            norms = np.sqrt(np.bincount(text_of_term, values * values, minlength=len(texts)))
        elif self.norm == "l1":
            norms = np.bincount(text_of_term, np.abs(values), minlength=len(texts))
        else:
            norms = np.ones(len(texts))
        norms[norms == 0.0] = 1.0  # all-zero rows: their sums are 0 and stay 0
        weighted = tf[:, np.newaxis] * self.weights[rows]
        sums = np.column_stack(
            [
                np.bincount(text_of_term, weighted[:, k], minlength=len(texts))
                for k in range(weighted.shape[1])
            ]
        )
        return np.asarray(sums / norms[:, np.newaxis])


@dataclass(frozen=True)
class EntityColumns:
    """The standardised entity columns compiled: StandardScaler's mean and scale and the
    classifier's weights for them (one column per decision value). Arrays are read-only."""

    names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray

    @classmethod
    def compile(
        cls, names: Sequence[str], scaler: StandardScaler, coef: np.ndarray
    ) -> EntityColumns:
        k = len(names)
        mean = scaler.mean_ if scaler.with_mean else None
        scale = scaler.scale_ if scaler.with_std else None
        return cls(
            names=tuple(names),
            mean=_read_only(np.zeros(k) if mean is None else np.asarray(mean, dtype=np.float64)),
            scale=_read_only(np.ones(k) if scale is None else np.asarray(scale, dtype=np.float64)),
            weights=_read_only(coef.T),
        )

    def decisions(self, values: np.ndarray) -> np.ndarray:
        """These columns' share of the decisions for rows of entity values."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.names):
            raise ValueError(
                f"expected entity features of shape (n, {len(self.names)}), got {values.shape}"
            )
        return np.asarray(((values - self.mean) / self.scale) @ self.weights)


class Link(Protocol):
    """The monotone map from decision values (n, columns) to probabilities (n, classes)."""

    def __call__(self, decisions: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class LogisticLink:
    """Binary logistic regression: one decision column, the positive class's logit."""

    def __call__(self, decisions: np.ndarray) -> np.ndarray:
        proba = np.empty((len(decisions), 2))
        expit(decisions[:, 0], out=proba[:, 1])
        np.subtract(1.0, proba[:, 1], out=proba[:, 0])
        return proba


@dataclass(frozen=True)
class SoftmaxLink:
    """Multinomial logistic regression."""

    def __call__(self, decisions: np.ndarray) -> np.ndarray:
        return np.asarray(softmax(decisions, copy=False))


@dataclass(frozen=True)
class OneVsRestLink:
    """One-vs-rest logistics normalised to sum 1 (sklearn's `_predict_proba_lr`)."""

    def __call__(self, decisions: np.ndarray) -> np.ndarray:
        proba = expit(decisions)
        proba /= proba.sum(axis=1)[:, np.newaxis]
        return np.asarray(proba)


@dataclass(frozen=True)
class CalibratedLink:
    """CalibratedClassifierCV's map: each member's decision columns (`columns[i]`, a slice of
    the decision matrix) through its fitted calibrators into the classes they predict
    (`class_indices[i]`), normalised as sklearn does, then averaged over the members. The
    calibrators are sklearn's own fitted objects, so their maths is sklearn's."""

    n_classes: int
    columns: tuple[slice, ...]
    class_indices: tuple[tuple[int, ...], ...]
    calibrators: tuple[tuple[Any, ...], ...]

    def __call__(self, decisions: np.ndarray) -> np.ndarray:
        mean = np.zeros((len(decisions), self.n_classes))
        for columns, indices, calibrators in zip(
            self.columns, self.class_indices, self.calibrators, strict=True
        ):
            mean += self._member(decisions[:, columns], indices, calibrators)
        mean /= len(self.columns)
        return mean

    def _member(
        self, decisions: np.ndarray, indices: tuple[int, ...], calibrators: tuple[Any, ...]
    ) -> np.ndarray:
        proba = np.zeros((len(decisions), self.n_classes))
        # Binary: one column, one calibrator, two class indices (sklearn's zip stops early).
        for index, column, calibrator in zip(indices, decisions.T, calibrators, strict=False):
            proba[:, index + 1 if self.n_classes == 2 else index] = _calibrate(calibrator, column)
        if self.n_classes == 2:
            proba[:, 0] = 1.0 - proba[:, 1]
        else:
            denominator = np.sum(proba, axis=1)[:, np.newaxis]
            uniform = np.full_like(proba, 1 / self.n_classes)
            proba = np.divide(proba, denominator, out=uniform, where=denominator != 0)
        proba[(proba > 1.0) & (proba <= 1.0 + 1e-5)] = 1.0
        return proba


class CompiledLinearScorer:
    """A fitted pipeline compiled to term tables and a link: sklearn's numbers, faster.

    Texts go through the pipeline's own preprocessing and each vectorizer's own analyzer;
    each known term contributes tf * (idf * coef) to the decision, divided by the norm of
    that vectorizer's tf-idf vector; the link maps decisions to probabilities.

    The tables are numpy arrays indexed through the vectorizers' vocabulary dicts (shared,
    not copied). Measured against a dict of per-term tuples: ~2 µs slower on a tweet, ~30%
    faster on a review, and 7 MB instead of 60 MB for IMDB's 440k terms. A batch is scored
    in one vectorised pass, which beat sklearn at every batch size measured, 1 to 1,000
    tweets or reviews (benchmarks/scorer.py): no batch is handed back to sklearn.

    Nothing is mutated after construction, so one instance can serve any number of
    threads. Build it with `from_pipeline`.
    """

    kind = "compiled"
    note = ""

    def __init__(
        self,
        *,
        classes: list[str],
        preprocess: Callable[[str], str] | None,
        tables: Sequence[TermTable],
        intercept: np.ndarray,
        link: Link,
        entity: EntityColumns | None = None,
    ) -> None:
        self.classes = classes
        self._preprocess = preprocess
        self._tables = tuple(tables)
        self._intercept = _read_only(intercept)
        self._link = link
        self._entity = entity
        self.entity_features = entity.names if entity is not None else ()
        self.entity_means = tuple(float(v) for v in entity.mean) if entity is not None else ()

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline) -> CompiledLinearScorer:
        """Compile a fitted pipeline, then check it against sklearn on probe texts.

        Raises NotCompilable naming the step or option that is not compiled, or if the probe
        disagrees (a subclass that changes the maths, an sklearn that changed it).
        """
        preprocessor, weighted, scaler, classifier = _steps(pipeline)
        vectorizers = [vectorizer for vectorizer, _ in weighted]
        names = entity_features(pipeline)
        linear_models, link = _linear_models_and_link(classifier)
        coef = np.vstack([_dense(model.coef_) for model in linear_models])
        intercept = np.concatenate(
            [
                np.broadcast_to(np.asarray(model.intercept_, dtype=np.float64), (len(model.coef_),))
                for model in linear_models
            ]
        )
        sizes = [len(vectorizer.vocabulary_) for vectorizer in vectorizers]
        if sum(sizes) + len(names) != coef.shape[1]:
            raise NotCompilable("the vocabularies and the classifier disagree on the feature count")
        entity = None
        if scaler is not None:
            entity = EntityColumns.compile(names, scaler, coef[:, sum(sizes) :])
        offsets = np.cumsum([0, *sizes])
        # A union weight scales its vectorizer's output, so it scales that table's weights.
        tables = [
            TermTable.compile(vectorizer, coef[:, start:stop] * weight)
            for (vectorizer, weight), start, stop in zip(
                weighted, offsets[:-1], offsets[1:], strict=True
            )
        ]
        scorer = cls(
            classes=[str(label) for label in classifier.classes_],
            preprocess=preprocessor.process if preprocessor is not None else None,
            tables=tables,
            intercept=intercept,
            link=link,
            entity=entity,
        )
        scorer._check_against(pipeline, _probe_texts(vectorizers))
        return scorer

    def predict_proba(self, texts: Sequence[str], entities: np.ndarray | None = None) -> np.ndarray:
        """`Pipeline.predict_proba(model_input(texts, entities, …))` up to rounding (see
        TOLERANCE)."""
        if isinstance(texts, str):
            raise ValueError("expected a sequence of texts, got a single string")
        if (entities is None) != (self._entity is None):
            raise ValueError(
                "this model needs entity features beside the texts"
                if self._entity is not None
                else "this model takes no entity features"
            )
        if self._preprocess is not None:
            texts = [self._preprocess(text) for text in texts]
        if len(texts) == 1:
            (text,) = texts
            parts = [table.decision(text)[np.newaxis, :] for table in self._tables]
        else:
            parts = [table.decisions(texts) for table in self._tables]
        if self._entity is not None and entities is not None:
            if len(entities) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(entities)} rows of entity features")
            parts.append(self._entity.decisions(entities))
        decisions = parts[0] if len(parts) == 1 else np.sum(parts, axis=0)
        return self._link(decisions + self._intercept)

    def _check_against(self, pipeline: Pipeline, probes: list[str]) -> None:
        entities = None
        if self._entity is not None:
            # Values around and far from the training means, negatives and zeros included.
            k = len(self._entity.names)
            grid = np.arange(len(probes) * k, dtype=np.float64).reshape(len(probes), k)
            entities = (grid % 7 - 2.0) * self._entity.scale + self._entity.mean
        features = model_input(probes, entities, self.entity_features)
        expected = np.tile(pipeline.predict_proba(features), (2, 1))
        rows = range(len(probes))
        got = np.vstack(
            [
                self.predict_proba(probes, entities),
                *(
                    self.predict_proba(
                        [probes[i]], None if entities is None else entities[i : i + 1]
                    )
                    for i in rows
                ),
            ]
        )
        if got.shape != expected.shape or not np.all(np.abs(got - expected) <= TOLERANCE):
            worst = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else None
            raise NotCompilable(
                f"compiled probabilities differ from the pipeline's on probe texts "
                f"(by {worst}); score this pipeline with SklearnScorer"
            )


def make_scorer(pipeline: Pipeline) -> Scorer:
    """The fastest scorer that gives sklearn's numbers: compiled if possible, else sklearn,
    with the reason logged and kept in the scorer's `note`."""
    try:
        return CompiledLinearScorer.from_pipeline(pipeline)
    except NotCompilable as exc:
        log.warning("model not compiled, scored by sklearn", extra={"reason": str(exc)})
        return SklearnScorer(pipeline, note=str(exc))


def _steps(
    pipeline: Pipeline,
) -> tuple[TextPreprocessor | None, Vectorizers, StandardScaler | None, Any]:
    """The preprocessor, vectorizers (with their union weights), entity scaler (or None) and
    classifier of a compilable pipeline, or NotCompilable naming what is not."""
    if isinstance(pipeline, Pipeline) and isinstance(pipeline.steps[0][1], ColumnTransformer):
        return _column_steps(pipeline)
    preprocessor, vectorizers, classifier = _text_steps(pipeline)
    return preprocessor, vectorizers, None, classifier


def _column_steps(
    pipeline: Pipeline,
) -> tuple[TextPreprocessor | None, Vectorizers, StandardScaler | None, Any]:
    """A ColumnTransformer of the text branch and a StandardScaler on the entity columns
    (model.build_pipeline with entity features), then a classifier."""
    if len(pipeline.steps) != 2:
        raise NotCompilable("expected a ColumnTransformer and a classifier")
    columns, classifier = (step for _, step in pipeline.steps)
    if not hasattr(columns, "transformers_"):
        raise NotCompilable("the pipeline is not fitted")
    names = [name for name, _, _ in columns.transformers_ if name != "remainder"]
    if names != ["text", ENTITY_BRANCH] or columns.transformer_weights:
        raise NotCompilable("expected the ColumnTransformer's branches text and entity, unweighted")
    scaler = columns.named_transformers_[ENTITY_BRANCH]
    if not isinstance(scaler, StandardScaler):
        raise NotCompilable(f"entity branch is {type(scaler).__name__}, not StandardScaler")
    text = text_branch(columns)
    preprocessor, vectorizers, _ = _text_steps(Pipeline([*text.steps, ("clf", classifier)]))
    return preprocessor, vectorizers, scaler, classifier


def _text_steps(pipeline: Pipeline) -> tuple[TextPreprocessor | None, Vectorizers, Any]:
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) not in (2, 3):
        raise NotCompilable(
            "expected a Pipeline of [TextPreprocessor,] TfidfVectorizer or a FeatureUnion of "
            "them, and a classifier"
        )
    steps = [step for _, step in pipeline.steps]
    preprocessor = None
    if len(steps) == 3:
        preprocessor = steps.pop(0)
        if not isinstance(preprocessor, TextPreprocessor):
            raise NotCompilable(
                f"first step is {type(preprocessor).__name__}: only TextPreprocessor's text "
                "preprocessing is compiled"
            )
    features, classifier = steps
    if isinstance(features, FeatureUnion):
        weights = features.transformer_weights or {}
        vectorizers = [
            (member, float(weights.get(name, 1.0))) for name, member in features.transformer_list
        ]
    else:
        vectorizers = [(features, 1.0)]
    for vectorizer, _ in vectorizers:
        _check_vectorizer(vectorizer)
    if not hasattr(classifier, "classes_"):
        raise NotCompilable("the pipeline is not fitted")
    return preprocessor, vectorizers, classifier


def _check_vectorizer(vectorizer: Any) -> None:
    if not isinstance(vectorizer, TfidfVectorizer):
        raise NotCompilable(f"feature step is {type(vectorizer).__name__}, not TfidfVectorizer")
    if not hasattr(vectorizer, "vocabulary_"):
        raise NotCompilable("the pipeline is not fitted")
    if vectorizer.input != "content":
        raise NotCompilable(f"vectorizer input={vectorizer.input!r}: only texts are scored")
    if np.dtype(vectorizer.dtype) != np.float64:
        raise NotCompilable(
            f"vectorizer dtype={np.dtype(vectorizer.dtype)}: sklearn's rounding at lower "
            "precision cannot be matched to 1e-12"
        )


def _linear_models_and_link(classifier: Any) -> tuple[list[Any], Link]:
    """The linear models whose decisions the link maps, in decision-column order."""
    if isinstance(classifier, CalibratedClassifierCV):
        return _calibrated(classifier)
    return [_linear(classifier)], _plain_link(classifier)


def _linear(model: Any) -> Any:
    if not isinstance(model, LogisticRegression | NBLogisticRegression):
        raise NotCompilable(
            f"classifier is {type(model).__name__}: only LogisticRegression and "
            "NBLogisticRegression are compiled"
        )
    return model


def _plain_link(model: Any) -> Link:
    if len(model.classes_) == 2:
        return LogisticLink()
    return OneVsRestLink() if isinstance(model, NBLogisticRegression) else SoftmaxLink()


def _calibrated(classifier: CalibratedClassifierCV) -> tuple[list[Any], Link]:
    if classifier.method not in ("sigmoid", "isotonic"):
        raise NotCompilable(f"calibration method {classifier.method!r} is not compiled")
    classes = np.asarray(classifier.classes_)
    models, columns, class_indices, calibrators = [], [], [], []
    start = 0
    for member in classifier.calibrated_classifiers_:
        estimator = member.estimator
        if isinstance(estimator, FrozenEstimator):  # calibrated on validation data
            estimator = estimator.estimator
        model = _linear(estimator)
        width = len(model.coef_)
        models.append(model)
        columns.append(slice(start, start + width))
        class_indices.append(tuple(int(i) for i in np.searchsorted(classes, model.classes_)))
        calibrators.append(tuple(member.calibrators))
        start += width
    link = CalibratedLink(
        n_classes=len(classes),
        columns=tuple(columns),
        class_indices=tuple(class_indices),
        calibrators=tuple(calibrators),
    )
    return models, link


def _calibrate(calibrator: Any, decisions: np.ndarray) -> np.ndarray:
    """`calibrator.predict(decisions)` by its own formula, without sklearn's per-call input
    validation (~60 µs, more than the rest of a tweet's scoring); the probe check in
    `from_pipeline` confirms the numbers are sklearn's."""
    if isinstance(calibrator, _SigmoidCalibration):
        return np.asarray(expit(-(calibrator.a_ * decisions + calibrator.b_)))
    if isinstance(calibrator, IsotonicRegression) and calibrator.out_of_bounds == "clip":
        clipped = np.clip(decisions, calibrator.X_min_, calibrator.X_max_)
        return np.interp(clipped, calibrator.X_thresholds_, calibrator.y_thresholds_)
    return np.asarray(calibrator.predict(decisions))


def _dense(coef: Any) -> np.ndarray:
    return np.asarray(coef.toarray() if sparse.issparse(coef) else coef, dtype=np.float64)


def _probe_texts(vectorizers: Sequence[TfidfVectorizer]) -> list[str]:
    """Texts with known, repeated and unknown terms, negations, markup and an empty one."""
    terms = [term for vectorizer in vectorizers for term in islice(vectorizer.vocabulary_, 64)]
    return [
        "",
        " ".join(terms),
        " ".join(terms[:8] * 3),
        "qzxv",
        "Not good, not bad at all!<br />Really &amp; truly @someone http://t.co/x",
    ]


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.array(array)
    array.flags.writeable = False
    return array
