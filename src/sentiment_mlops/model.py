"""The model: a scikit-learn Pipeline built from a typed config.

Kept free of tracking and serving concerns so that training, tuning and serving share one
definition of what "the model" is. The pipeline is built from three parts, each also built
on its own so that tuning can fit a shared part once and reuse it across trials:

    [text: TextPreprocessor]  ->  tfidf: word TF-IDF, or a union of word and char_wb TF-IDF
      ->  clf: LogisticRegression or NBLogisticRegression, in CalibratedClassifierCV if asked

With entity features (features/, `sentiment train --features`) the input is a frame of the
text and numeric columns instead of a list of texts, and the first step is a
ColumnTransformer: the text part above on the `text` column, a StandardScaler on the entity
columns, side by side. Every option keeps the model linear in the TF-IDF and the scaled
entity features plus a monotone map, so a fitted pipeline compiles to the fast scorer in
scorer.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import StandardScaler

from sentiment_mlops.config import TrainConfig
from sentiment_mlops.nb_scaling import NBLogisticRegression
from sentiment_mlops.text import TextPreprocessor

# Where each part sits in the pipeline; the compiled scorer and tests look steps up by name.
PREPROCESS_STEP = "text"
VECTORIZER_STEP = "tfidf"
CLASSIFIER_STEP = "clf"
# With entity features: the ColumnTransformer step, its two branches, the text column.
COLUMNS_STEP = "columns"
TEXT_BRANCH = "text"
ENTITY_BRANCH = "entity"
TEXT_COLUMN = "text"

# The types a pipeline built here holds beyond skops' default trusted set: the project's own
# estimators, the calibration wrapper sklearn keeps private, and the CV splitter it stores.
# Loading trusts exactly these (registry.py); anything else in an artifact is refused.
TRUSTED_TYPES = (
    "sentiment_mlops.nb_scaling.NBLogisticRegression",
    "sentiment_mlops.text.TextPreprocessor",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.frozen._frozen.FrozenEstimator",
    "sklearn.model_selection._split.StratifiedKFold",
)


def build_preprocessor(config: TrainConfig) -> TextPreprocessor | None:
    """The text preprocessing step, or None when every preprocessing option is off."""
    options = config.preprocess
    if not (options.normalise or options.negation):
        return None
    return TextPreprocessor(normalise=options.normalise, negation=options.negation)


def build_vectorizer(config: TrainConfig) -> TfidfVectorizer | FeatureUnion:
    """Word TF-IDF, or word and character TF-IDF side by side, each normalised on its own,
    the characters' scaled by `char_vectorizer.weight`.

    The config sections are passed through as keyword arguments, so a key added to
    `VectorizerConfig` (and documented in configs/train.yaml) reaches sklearn without touching
    this function; sklearn rejects a key it does not know. Fields typed as tuples
    (`ngram_range`, which sklearn accepts only as a tuple) stay tuples in `model_dump()`.
    """
    word = TfidfVectorizer(**config.vectorizer.model_dump())
    char_options = config.char_vectorizer.model_dump()
    weight = char_options.pop("weight")
    if not char_options.pop("enabled"):
        return word
    char = TfidfVectorizer(analyzer="char_wb", **char_options)
    weights = None if weight == 1.0 else {"char": weight}
    return FeatureUnion(
        [("word", word), ("char", char)], transformer_weights=weights, n_jobs=_jobs(config)
    )


def build_classifier(config: TrainConfig, calibrate: bool = True) -> Any:
    """Logistic regression, on NB-scaled features if asked, calibrated if asked (and
    `calibrate`: False leaves it to `calibrate_on`, fitted on validation data).

    Calibration is fitted by stratified, shuffled k-fold CV on out-of-fold decisions
    (`ensemble=False`): one classifier refitted on all the data serves, with one calibrator
    map, so serving costs what an uncalibrated model does.
    """
    options = config.classifier.model_dump()
    classifier: Any
    if config.nb_scaling.enabled:
        classifier = NBLogisticRegression(
            alpha=config.nb_scaling.alpha,
            beta=config.nb_scaling.beta,
            random_state=config.seed,
            **options,
        )
    else:
        classifier = LogisticRegression(**options, random_state=config.seed)
    if config.calibration.method == "none" or not calibrate:
        return classifier
    return CalibratedClassifierCV(
        classifier,
        method=config.calibration.method,
        cv=StratifiedKFold(config.calibration.cv, shuffle=True, random_state=config.seed),
        ensemble=False,
        n_jobs=_jobs(config),
    )


def _jobs(config: TrainConfig) -> int | None:
    return config.n_jobs if config.n_jobs > 1 else None


def serial(pipeline: Pipeline) -> Pipeline:
    """Set every step's `n_jobs` back to one process, in place, once fitted: `n_jobs` speeds
    up fitting only, and a served or reloaded model must not start worker processes to score
    (sklearn's path scores with these steps when a model is not compiled)."""
    pipeline.set_params(
        **{name: None for name in pipeline.get_params(deep=True) if name.endswith("__n_jobs")}
    )
    return pipeline


def build_pipeline(
    config: TrainConfig, entity_features: Sequence[str] = (), calibrate: bool = True
) -> Pipeline:
    """The whole model: preprocessing (if any), features, classifier, every option from
    `config`; with `entity_features`, those numeric columns standardised beside the text's.
    `calibrate=False` builds it uncalibrated, for `calibrate_on` after fitting.

    NB scaling needs non-negative features, which standardised columns are not: it is
    refused with entity features.
    """
    preprocessor = build_preprocessor(config)
    steps: list[tuple[str, Any]] = [] if preprocessor is None else [(PREPROCESS_STEP, preprocessor)]
    steps.append((VECTORIZER_STEP, build_vectorizer(config)))
    if not entity_features:
        return Pipeline([*steps, (CLASSIFIER_STEP, build_classifier(config, calibrate))])
    if config.nb_scaling.enabled:
        raise ValueError("nb_scaling cannot be combined with entity features")
    columns = ColumnTransformer(
        [
            (TEXT_BRANCH, Pipeline(steps), TEXT_COLUMN),
            (ENTITY_BRANCH, StandardScaler(), list(entity_features)),
        ],
        sparse_threshold=1.0,
    )
    return Pipeline(
        [(COLUMNS_STEP, columns), (CLASSIFIER_STEP, build_classifier(config, calibrate))]
    )


def calibrate_on(
    pipeline: Pipeline, texts: Sequence[str], labels: Sequence[str], config: TrainConfig
) -> Pipeline:
    """Calibrate a fitted, uncalibrated text pipeline on held-out rows, in place.

    For training rows unlike what will be scored: SST-2's training phrases make out-of-fold
    decisions look surer than they are on whole sentences, so a calibrator fitted by CV on
    them is overconfident there. The classifier is frozen (fitted once, on all the training
    data) and only the calibrator (`config.calibration.method`) is fitted on these rows; the
    result is the same CalibratedClassifierCV step that CV calibration leaves, which the
    compiled scorer reads.
    """
    features = pipeline[:-1].transform(texts)
    name, classifier = pipeline.steps[-1]
    calibrated = CalibratedClassifierCV(
        FrozenEstimator(classifier), method=config.calibration.method
    )
    pipeline.steps[-1] = (name, calibrated.fit(features, list(labels)))
    return pipeline


def entity_features(pipeline: Pipeline) -> tuple[str, ...]:
    """The entity feature columns a pipeline was built with, in order; () for text only
    (and for any other model with `predict_proba`, which SklearnScorer also serves)."""
    steps = getattr(pipeline, "steps", None)
    first = steps[0][1] if steps else None
    if not isinstance(first, ColumnTransformer):
        return ()
    for name, _, columns in first.transformers:
        if name == ENTITY_BRANCH:
            return tuple(str(column) for column in columns)
    return ()


def entity_means(pipeline: Pipeline) -> tuple[float, ...]:
    """The fitted entity columns' training means (what their scaler subtracts), in order; ()
    for text only. Serving scores with these when an entity's features cannot be read: the
    standardised columns are then 0 and add nothing to the decision."""
    names = entity_features(pipeline)
    if not names:
        return ()
    scaler = pipeline.steps[0][1].named_transformers_[ENTITY_BRANCH]
    mean = getattr(scaler, "mean_", None) if getattr(scaler, "with_mean", False) else None
    return tuple(0.0 for _ in names) if mean is None else tuple(float(v) for v in mean)


def text_branch(columns: ColumnTransformer) -> Pipeline:
    """The text part of a ColumnTransformer: the fitted clone once fitted."""
    if hasattr(columns, "transformers_"):
        branch = columns.named_transformers_[TEXT_BRANCH]
    else:
        branch = {name: step for name, step, _ in columns.transformers}[TEXT_BRANCH]
    if not isinstance(branch, Pipeline):
        raise TypeError(f"the text branch is {type(branch).__name__}, not a Pipeline")
    return branch


def model_input(
    texts: Sequence[str], entities: np.ndarray | None, names: Sequence[str]
) -> Sequence[str] | pd.DataFrame:
    """What a pipeline's fit and predict take: the texts, or with entity features a frame of
    the text column and the named numeric columns (`entities`, one row per text)."""
    if not names:
        return texts
    if entities is None or entities.shape != (len(texts), len(names)):
        shape = None if entities is None else entities.shape
        raise ValueError(
            f"expected entity features of shape ({len(texts)}, {len(names)}), got {shape}"
        )
    frame = pd.DataFrame(np.asarray(entities, dtype=np.float64), columns=list(names))
    frame.insert(0, TEXT_COLUMN, pd.Series(list(texts), dtype=object))
    return frame


@dataclass(frozen=True)
class LoadedModel:
    """A verified, deserialised model version and what identifies it (the registry's answer)."""

    pipeline: Pipeline
    version: int
    sha256: str
    run_id: str


def plain_vocabulary(pipeline: Pipeline) -> Pipeline:
    """Turn the fitted vocabularies' numpy integer indices into Python ints, in place.

    Feature pruning (min_df, max_features) leaves numpy scalars there; skops writes each one
    as a separate file, which makes saving a 40k-term model take half a minute.
    """
    for vectorizer in vectorizers(pipeline):
        vocabulary = getattr(vectorizer, "vocabulary_", None)
        if isinstance(vocabulary, dict):
            vectorizer.vocabulary_ = {term: int(index) for term, index in vocabulary.items()}
    return pipeline


def vectorizers(pipeline: Pipeline) -> list[Any]:
    """The pipeline's vectorizers in feature order: one, or the members of a FeatureUnion."""
    found: list[Any] = []
    steps = [step for _, step in pipeline.steps]
    if steps and isinstance(steps[0], ColumnTransformer):
        steps = [step for _, step in text_branch(steps[0]).steps]
    for step in steps:
        if isinstance(step, FeatureUnion):
            found.extend(member for _, member in step.transformer_list)
        else:
            found.append(step)
    return [step for step in found if hasattr(step, "build_analyzer")]
