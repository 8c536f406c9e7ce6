"""Turning texts into predictions: scoring, label choice and the prediction metrics in one place.

Routes validate input, pick the model that answers (`ModelPool.answering`) and hand both to
`Predictor.predict`; what comes back is one typed `Answer`, whatever the route. Keeping the
metrics here means a prediction is counted the same way however it was asked for, and the
A/B router only has to choose which `ServingModel` a request gets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sentiment_mlops.serving.metrics import Metrics
from sentiment_mlops.serving.models import ServingModel
from sentiment_mlops.serving.predictions import new_prediction_id

# Above this many texts scoring moves off the event loop so other requests keep flowing; below
# it the compiled scorer takes microseconds, less than a hop to a thread would cost.
INLINE_BATCH_LIMIT = 32


@dataclass(frozen=True)
class ScoredText:
    """One text's prediction: its id, the chosen label and every class's probability."""

    prediction_id: str
    label: str
    probabilities: dict[str, float]


@dataclass(frozen=True)
class Answer:
    """The predictions for one request's texts, in order, and the model that made them."""

    model_version: int
    variant: str
    predictions: list[ScoredText]


class Predictor:
    """Scores texts with a serving model and records the prediction metrics."""

    def __init__(self, metrics: Metrics, inline_limit: int = INLINE_BATCH_LIMIT) -> None:
        self._metrics = metrics
        self._inline_limit = inline_limit

    async def predict(self, model: ServingModel, texts: Sequence[str]) -> Answer:
        """Predictions for `texts` (already validated) by `model`, one per text in order."""
        started = time.perf_counter()
        if len(texts) > self._inline_limit:
            proba = await asyncio.to_thread(model.scorer.predict_proba, texts)
        else:
            proba = model.scorer.predict_proba(texts)
        elapsed = time.perf_counter() - started
        version, variant = str(model.version), model.alias
        metrics = self._metrics
        metrics.inference_duration.labels(version, variant).observe(elapsed)
        confidence = metrics.confidence.labels(version, variant)
        length = metrics.input_length.labels(version, variant)
        classes = model.classes
        predictions = []
        best_columns = np.argmax(proba, axis=1).tolist()
        for text, row, best in zip(texts, proba.tolist(), best_columns, strict=True):
            label = classes[best]
            metrics.predictions.labels(version, variant, label).inc()
            confidence.observe(row[best])
            length.observe(len(text))
            predictions.append(
                ScoredText(new_prediction_id(), label, dict(zip(classes, row, strict=True)))
            )
        return Answer(model.version, variant, predictions)
