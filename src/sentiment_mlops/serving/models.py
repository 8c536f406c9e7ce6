"""The models a server holds, by alias, and how a newly promoted version replaces one.

A new version is loaded, verified (hash and trusted types, in the registry), compiled and
warmed up off to the side; only then is the alias map replaced in one assignment. Requests
that already hold the old `ServingModel` finish with it. A version that fails any step is
refused, counted and logged, and the previous one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import numpy as np

from sentiment_mlops.model import LoadedModel, Scorer, make_scorer
from sentiment_mlops.serving.metrics import Metrics

log = logging.getLogger("sentiment_mlops.serving.models")

WARMUP_TEXTS = (
    "great service, thank you",
    "this was a terrible experience and I want a refund",
    "ok",
    "",
)


class ModelSource(Protocol):
    """What the pool needs from the registry (so tests can hand it another store)."""

    def resolve(self, alias: str) -> int | None: ...

    def load(self, ref: str | int) -> LoadedModel: ...


class ModelRejected(RuntimeError):
    """A loaded model does not behave like a probabilistic classifier."""


class NoModelLoaded(RuntimeError):
    """No verified model is loaded for the alias that should answer; the message names it."""


@dataclass(frozen=True)
class ServingModel:
    """One loaded, verified, compiled version, immutable so requests can share it freely."""

    alias: str
    version: int
    sha256: str
    run_id: str
    scorer: Scorer
    loaded_at: datetime

    @property
    def classes(self) -> list[str]:
        return self.scorer.classes


@dataclass(frozen=True)
class ReloadOutcome:
    alias: str
    version: int | None
    result: Literal["loaded", "unchanged", "failed", "missing"]
    error: str | None = None


def _warm_up(scorer: Scorer) -> None:
    """Score a few texts so the first request pays no first-call costs, and sanity-check."""
    proba = scorer.predict_proba(list(WARMUP_TEXTS))
    expected = (len(WARMUP_TEXTS), len(scorer.classes))
    if proba.shape != expected:
        raise ModelRejected(f"scorer returned shape {proba.shape}, expected {expected}")
    if not np.all(np.isfinite(proba)):
        raise ModelRejected("scorer returned probabilities that are not finite (NaN or inf)")
    if not np.allclose(proba.sum(axis=1), 1.0, atol=1e-6):
        raise ModelRejected("scorer probabilities do not sum to 1")


class ModelPool:
    """Serving models by alias, swapped atomically when the registry moves an alias."""

    def __init__(self, source: ModelSource, aliases: Sequence[str], metrics: Metrics) -> None:
        self._source = source
        self.aliases = tuple(aliases)
        self._metrics = metrics
        self._models: dict[str, ServingModel] = {}
        self._lock = asyncio.Lock()

    def get(self, alias: str) -> ServingModel | None:
        return self._models.get(alias)

    def answering(self) -> ServingModel:
        """The model that answers a prediction request: the one place that decides it.

        Today that is the first alias the pool serves (`SENTIMENT_MODEL_ALIAS`); routing between
        variants replaces this decision, and nothing else, when it arrives.
        """
        alias = self.aliases[0]
        model = self._models.get(alias)
        if model is None:
            raise NoModelLoaded(f"no verified '{alias}' model is loaded yet")
        return model

    def snapshot(self) -> dict[str, ServingModel]:
        return dict(self._models)

    def _load(self, alias: str, version: int) -> ServingModel:
        loaded = self._source.load(version)
        scorer = make_scorer(loaded.pipeline)
        _warm_up(scorer)
        return ServingModel(
            alias=alias,
            version=loaded.version,
            sha256=loaded.sha256,
            run_id=loaded.run_id,
            scorer=scorer,
            loaded_at=datetime.now(UTC),
        )

    async def refresh(self) -> list[ReloadOutcome]:
        """Resolve every alias now and swap in versions that changed."""
        async with self._lock:
            return [await self._refresh_one(alias) for alias in self.aliases]

    async def _refresh_one(self, alias: str) -> ReloadOutcome:
        current = self._models.get(alias)
        try:
            version = await asyncio.to_thread(self._source.resolve, alias)
        except Exception as exc:  # the registry being down must not stop serving
            log.warning("cannot resolve alias", extra={"alias": alias, "error": str(exc)})
            return ReloadOutcome(alias, None, "failed", f"cannot resolve alias: {exc}")
        if version is None:
            return ReloadOutcome(alias, None, "missing")
        if current is not None and current.version == version:
            return ReloadOutcome(alias, version, "unchanged")
        try:
            model = await asyncio.to_thread(self._load, alias, version)
        except Exception as exc:  # any failure refuses this version, whatever its kind
            self._metrics.reloads.labels(alias, "failure").inc()
            log.error(
                "refused model version",
                extra={"alias": alias, "model_version": version, "error": str(exc)},
            )
            return ReloadOutcome(alias, version, "failed", str(exc))
        self._models = {**self._models, alias: model}
        self._metrics.reloads.labels(alias, "success").inc()
        if current is not None:
            self._info(current).set(0)
        self._info(model).set(1)
        log.info(
            "serving model version",
            extra={
                "alias": alias,
                "model_version": version,
                "previous_version": current.version if current else None,
                "scorer": model.scorer.kind,
            },
        )
        return ReloadOutcome(alias, version, "loaded")

    def _info(self, model: ServingModel) -> Any:
        return self._metrics.model_info.labels(
            str(model.version), model.alias, model.sha256, model.scorer.kind
        )

    async def run(self, interval_seconds: float) -> None:
        """Poll the registry forever; cancelled when the server shuts down."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.refresh()
            except Exception:  # keep polling whatever happened in one round
                log.exception("model refresh failed")
