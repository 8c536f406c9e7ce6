"""Stand-ins for tests that start the real app without an MLflow store."""

from __future__ import annotations

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from sentiment_mlops.config import CHAMPION
from sentiment_mlops.registry import LoadedModel

TEXTS = [
    ("great service, thank you", "positive"),
    ("I love this airline", "positive"),
    ("wonderful crew and a smooth flight", "positive"),
    ("thanks for the quick help", "positive"),
    ("best trip ever, love it", "positive"),
    ("friendly staff, great food", "positive"),
    ("terrible service, never again", "negative"),
    ("my flight was cancelled again", "negative"),
    ("lost my bag and nobody helps", "negative"),
    ("rude staff and a dirty seat", "negative"),
    ("delayed for hours, awful", "negative"),
    ("worst customer service ever", "negative"),
]


class FakeSource:
    """A `ModelSource` holding one small TF-IDF + logistic regression as version 1 of the
    champion, fitted on a dozen texts (enough to load, compile and warm up)."""

    def __init__(self) -> None:
        pipeline = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())])
        pipeline.fit([text for text, _ in TEXTS], [label for _, label in TEXTS])
        self.model = LoadedModel(pipeline=pipeline, version=1, sha256="0" * 64, run_id="fake")

    def resolve(self, alias: str) -> int | None:
        return self.model.version if alias == CHAMPION else None

    def load(self, ref: str | int) -> LoadedModel:
        return self.model
