"""The model: a scikit-learn Pipeline built from a typed config.

Kept free of tracking and serving concerns so that training, tuning and serving share one
definition of what "the model" is.
"""

from __future__ import annotations

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from sentiment_mlops.config import TrainConfig


def build_pipeline(config: TrainConfig) -> Pipeline:
    """TF-IDF features into a logistic regression, every hyperparameter from `config`."""
    vec = config.vectorizer
    clf = config.classifier
    return Pipeline(
        [
            (
                "tfidf",
                TfidfVectorizer(
                    lowercase=vec.lowercase,
                    ngram_range=vec.ngram_range,
                    min_df=vec.min_df,
                    max_df=vec.max_df,
                    max_features=vec.max_features,
                    sublinear_tf=vec.sublinear_tf,
                    strip_accents=vec.strip_accents,
                    token_pattern=vec.token_pattern,
                ),
            ),
            (
                "clf",
                LogisticRegression(
                    C=clf.C,
                    solver=clf.solver,
                    max_iter=clf.max_iter,
                    class_weight=clf.class_weight,
                    tol=clf.tol,
                    random_state=config.seed,
                ),
            ),
        ]
    )


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
