"""Turning texts into predictions: scoring, label choice, the prediction metrics, the shadow, and
handing every prediction to the sink, in one place.

Routes validate input, ask the pool who answers (`ModelPool.answering`, a `Route`) and hand
both to `Predictor.predict`; what comes back is one typed `Answer`, whatever the route.
Keeping the metrics here means a prediction is counted the same way however it was asked for,
primary or shadow.

The shadow scores the same texts as a background task that the handler never awaits, after
the response has gone: a compiled shadow on the event loop (microseconds a text, in chunks, as
a primary batch), any other in a thread of its own, so a slow or failing shadow model changes
neither the response nor its latency. (In a thread, the compiled shadow was the slower choice:
whenever the loop made a system call, it waited for the thread to let go of the GIL, up to the
interpreter's 5 ms switch interval; p99 at c = 1 was 25 ms.)
Its predictions have their own ids, are counted under the shadow's variant, and go
to the sink with `shadow_of` naming the primary prediction of the same text. At most
`shadow_max_in_flight` shadow requests wait or run at once; beyond that, and when the shadow
model raises or is not loaded, the shadow prediction is dropped and counted
(`model_shadow_dropped_total{variant, reason}`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
from prometheus_client import Counter, Histogram

from sentiment_mlops.scorer import Scorer
from sentiment_mlops.serving.entity_features import EntityKeys, EntityRow, OnlineFeatures
from sentiment_mlops.serving.metrics import Metrics
from sentiment_mlops.serving.models import Route, ServingModel
from sentiment_mlops.serving.predictions import new_prediction_id

log = logging.getLogger("sentiment_mlops.serving.predictor")

# The compiled scorer scores a batch on the event loop this many texts at a time (microseconds
# each), the loop free to answer other requests between two chunks. Not in a thread: under the
# GIL a scoring thread runs no faster, and while it held the GIL every system call of the loop
# (a socket write, a log flush) waited for it to let go, up to the interpreter's 5 ms switch
# interval. sklearn's scorer (a pipeline that could not be compiled: milliseconds, or more, per
# call) scores a batch larger than this in a thread, so a slow model cannot stall the loop.
INLINE_BATCH_LIMIT = 32


@dataclass(frozen=True)
class PredictionEvent:
    """One scored text, as the prediction log needs it (serving/predictions.py's columns).

    `subject` is the raw user id or token subject (None when neither is known); the log
    hashes it. `account` is the account the request named (None if it named none).
    `latency_ms` is the scoring time of the whole request the text came in.
    `shadow_of` is the primary prediction's id for a shadow prediction, else None.
    """

    prediction_id: str
    created_at: datetime
    experiment: str
    variant: str
    model_version: int
    label: str
    probabilities: dict[str, float]
    text: str
    subject: str | None
    latency_ms: float
    shadow_of: str | None
    account: str | None = None


class PredictionSink(Protocol):
    """Where predictions go once made, primary and shadow: the prediction log."""

    def record(self, events: Sequence[PredictionEvent]) -> None:
        """Take one request's predictions; called on the event loop, so it must neither
        block nor raise."""


@dataclass(frozen=True)
class ScoredText:
    """One text's prediction: its id, the chosen label and every class's probability."""

    prediction_id: str
    label: str
    probabilities: dict[str, float]


@dataclass(frozen=True)
class Answer:
    """The predictions for one request's texts, in order, the model that made them and the
    experiment they count in; for a model with entity features, the values they were scored
    with and where they came from (None for a text-only model)."""

    model_version: int
    variant: str
    experiment: str
    predictions: list[ScoredText]
    features: EntityRow | None = None


_SERIES_CACHE_SIZE = 64


@dataclass(frozen=True)
class _ModelSeries:
    """The prediction metrics' series of one model version serving as one variant."""

    inference_duration: Histogram
    confidence: Histogram
    input_length: Histogram
    version: str
    variant: str
    predictions: dict[str, Counter]  # by label, each added at its first prediction

    @classmethod
    def of(cls, metrics: Metrics, model: ServingModel) -> _ModelSeries:
        version, variant = str(model.version), model.alias
        return cls(
            metrics.inference_duration.labels(version, variant),
            metrics.confidence.labels(version, variant),
            metrics.input_length.labels(version, variant),
            version,
            variant,
            {},
        )

    def counter(self, metrics: Metrics, label: str) -> Counter:
        return metrics.predictions.labels(self.version, self.variant, label)


def _timed(scorer: Scorer, texts: Sequence[str], row: EntityRow | None) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    entities = None if row is None else np.tile(row.values, (len(texts), 1))
    proba = scorer.predict_proba(texts, entities)
    return proba, time.perf_counter() - started


class Predictor:
    """Scores texts with a route's model, starts its shadow, records metrics and events."""

    def __init__(
        self,
        metrics: Metrics,
        sink: PredictionSink,
        features: OnlineFeatures,
        *,
        shadow_max_in_flight: int,
        inline_limit: int = INLINE_BATCH_LIMIT,
    ) -> None:
        self._metrics = metrics
        self._sink = sink
        self._features = features
        self._inline_limit = inline_limit
        self._shadow_max = shadow_max_in_flight
        self._shadows: set[asyncio.Task[None]] = set()
        self._series: dict[tuple[int, str], _ModelSeries] = {}
        # One thread: shadow work queues behind itself, never in front of the primary path's.
        self._shadow_thread = ThreadPoolExecutor(1, thread_name_prefix="shadow")

    async def predict(
        self,
        route: Route,
        texts: Sequence[str],
        subject: str | None,
        keys: EntityKeys | None = None,
    ) -> Answer:
        """Predictions for `texts` (already validated) by the route's model, one per text in
        order, with the entity features of `keys` if the model takes them; the route's shadow
        is started in the background and not waited for."""
        model = route.model
        keys = keys or EntityKeys()
        row = await self._entity_row(model, keys)
        if len(texts) > self._inline_limit and model.scorer.kind != "compiled":
            proba, seconds = await asyncio.to_thread(_timed, model.scorer, texts, row)
        else:
            proba, seconds = await self._score_on_loop(model.scorer, texts, row)
        answer = self._answer(
            model, route.experiment, texts, proba, seconds, (subject, keys.account), None, row
        )
        if route.shadow is not None:
            self._start_shadow(route.shadow, route.shadow_model, texts, answer, subject, keys)
        return answer

    async def _score_on_loop(
        self, scorer: Scorer, texts: Sequence[str], row: EntityRow | None
    ) -> tuple[np.ndarray, float]:
        """`texts` scored `inline_limit` at a time, other requests served between chunks; the
        seconds are the scoring's own."""
        proba, seconds = _timed(scorer, texts[: self._inline_limit], row)
        if len(texts) > self._inline_limit:
            parts = [proba]
            for start in range(self._inline_limit, len(texts), self._inline_limit):
                await asyncio.sleep(0)  # other requests' turn
                part, took = _timed(scorer, texts[start : start + self._inline_limit], row)
                parts.append(part)
                seconds += took
            proba = np.concatenate(parts)
        return proba, seconds

    async def _entity_row(self, model: ServingModel, keys: EntityKeys) -> EntityRow | None:
        """The online store's features (or defaults) for a model that takes them, else None."""
        scorer = model.scorer
        if not scorer.entity_features:
            return None
        return await self._features.lookup(
            model.alias, scorer.entity_features, scorer.entity_means, keys
        )

    def _answer(
        self,
        model: ServingModel,
        experiment: str,
        texts: Sequence[str],
        proba: np.ndarray,
        seconds: float,
        asked_by: tuple[str | None, str | None],
        shadow_of: Sequence[str] | None,
        entity_row: EntityRow | None,
    ) -> Answer:
        """Labels, ids, metrics and sink events for one request's scored texts; `asked_by`
        is the request's (subject, account)."""
        subject, account = asked_by
        variant = model.alias
        series = self._series_of(model)
        series.inference_duration.observe(seconds)
        confidence, length, by_label = series.confidence, series.input_length, series.predictions
        classes = model.classes
        created_at, latency_ms = datetime.now(UTC), seconds * 1000
        predictions, events = [], []
        best_columns = np.argmax(proba, axis=1).tolist()
        for i, (text, row, best) in enumerate(
            zip(texts, proba.tolist(), best_columns, strict=True)
        ):
            label = classes[best]
            counter = by_label.get(label)
            if counter is None:  # a series appears with its first prediction, as before
                counter = by_label[label] = series.counter(self._metrics, label)
            counter.inc()
            confidence.observe(row[best])
            length.observe(len(text))
            scored = ScoredText(new_prediction_id(), label, dict(zip(classes, row, strict=True)))
            predictions.append(scored)
            events.append(
                PredictionEvent(
                    prediction_id=scored.prediction_id,
                    created_at=created_at,
                    experiment=experiment,
                    variant=variant,
                    model_version=model.version,
                    label=label,
                    probabilities=scored.probabilities,
                    text=text,
                    subject=subject,
                    latency_ms=latency_ms,
                    shadow_of=shadow_of[i] if shadow_of is not None else None,
                    account=account,
                )
            )
        self._sink.record(events)
        return Answer(model.version, variant, experiment, predictions, entity_row)

    def _series_of(self, model: ServingModel) -> _ModelSeries:
        """The metric series of `model`'s version and variant, looked up once per model
        (prometheus_client's `labels()` takes a lock and builds a key on every call)."""
        key = (model.version, model.alias)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= _SERIES_CACHE_SIZE:  # versions swapped in over a long life
                self._series.clear()
            series = self._series[key] = _ModelSeries.of(self._metrics, model)
        return series

    def _start_shadow(
        self,
        alias: str,
        model: ServingModel | None,
        texts: Sequence[str],
        primary: Answer,
        subject: str | None,
        keys: EntityKeys,
    ) -> None:
        """Score `texts` with the shadow `model` in the background, if it has one and there is
        room; else count the shadow prediction as dropped."""
        if model is None:
            self._metrics.shadow_dropped.labels(alias, "no_model").inc()
            return
        if len(self._shadows) >= self._shadow_max:
            self._metrics.shadow_dropped.labels(alias, "busy").inc()
            return
        task = asyncio.create_task(self._shadow(model, texts, primary, subject, keys))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(
        self,
        model: ServingModel,
        texts: Sequence[str],
        primary: Answer,
        subject: str | None,
        keys: EntityKeys,
    ) -> None:
        """Score `texts` with the shadow model, after the primary's response; never raises."""
        loop = asyncio.get_running_loop()
        try:
            row = await self._entity_row(model, keys)
            if model.scorer.kind == "compiled":
                await asyncio.sleep(0)  # the primary's response is written first
                proba, seconds = await self._score_on_loop(model.scorer, texts, row)
            else:
                proba, seconds = await loop.run_in_executor(
                    self._shadow_thread, _timed, model.scorer, texts, row
                )
            primary_ids = [p.prediction_id for p in primary.predictions]
            self._answer(
                model,
                primary.experiment,
                texts,
                proba,
                seconds,
                (subject, keys.account),
                primary_ids,
                row,
            )
        except Exception as exc:  # a shadow's failure is its own, never the request's
            self._metrics.shadow_dropped.labels(model.alias, "error").inc()
            log.error(
                "shadow prediction failed",
                extra={
                    "variant": model.alias,
                    "model_version": model.version,
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )

    async def close(self) -> None:
        """Cancel the shadow predictions still in flight (at shutdown)."""
        for task in list(self._shadows):
            task.cancel()
        await asyncio.gather(*self._shadows, return_exceptions=True)
        self._shadow_thread.shutdown(wait=False, cancel_futures=True)
        self._features.close()
