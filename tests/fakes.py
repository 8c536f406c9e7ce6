"""Stand-ins for the registry where the registry is not what a test is about.

`FakeSource` is a `ModelSource` over in-memory pipelines: aliases point at versions, and
every failure the model pool must survive (registry unreachable, download error, a call
that hangs) can be switched on. `Misbehaving` is a "pipeline" whose probabilities are wrong in
a chosen way; `Gated` and `Failing` hold or fail on chosen texts. `RecordingSink` keeps the
predictions the server hands to the prediction log.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from sentiment_mlops.model import LoadedModel
from sentiment_mlops.serving.predictor import PredictionEvent


class FakeSource:
    """Versions and aliases held in memory, with switchable failures."""

    def __init__(self, versions: Mapping[int, Any], aliases: Mapping[str, int]) -> None:
        self.versions = dict(versions)
        self.aliases = dict(aliases)
        self.resolve_error: Exception | None = None
        self.load_errors: dict[int, Exception] = {}
        self.loads: list[int] = []
        self.resolves = 0
        self.before_resolve: Callable[[str], None] | None = None
        self.before_load: Callable[[int], None] | None = None
        self._lock = threading.Lock()

    def resolve(self, alias: str) -> int | None:
        with self._lock:
            self.resolves += 1
        if self.before_resolve is not None:
            self.before_resolve(alias)
        if self.resolve_error is not None:
            raise self.resolve_error
        return self.aliases.get(alias)

    def load(self, ref: str | int) -> LoadedModel:
        version = int(ref) if isinstance(ref, int) or ref.isdigit() else self.aliases[ref]
        with self._lock:
            self.loads.append(version)
        if self.before_load is not None:
            self.before_load(version)
        if version in self.load_errors:
            raise self.load_errors[version]
        digest = hashlib.sha256(f"version {version}".encode()).hexdigest()
        return LoadedModel(self.versions[version], version, digest, f"run-{version}")


class Misbehaving:
    """Looks like a fitted classifier to the pool, but returns the probabilities it is given.

    `proba(n_texts)` makes the answer, so a test can return NaN, rows that do not sum to 1,
    or the wrong shape.
    """

    def __init__(self, proba: Callable[[int], np.ndarray], classes: tuple[str, ...]) -> None:
        self.classes_ = np.array(classes)
        self._proba = proba

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self._proba(len(texts))


class Gated:
    """Wraps a fitted pipeline; scoring any text that contains `HOLD` waits for `release`.

    Lets a test keep requests in flight on one model version while another is swapped in.
    """

    def __init__(self, pipeline: Any) -> None:
        self.classes_ = pipeline.classes_
        self._pipeline = pipeline
        self.release = threading.Event()
        self.arrived = threading.Semaphore(0)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        if any("HOLD" in text for text in texts):
            self.arrived.release()
            if not self.release.wait(timeout=60):
                raise TimeoutError("the test never released the held request")
        return np.asarray(self._pipeline.predict_proba(texts))


class Failing:
    """Wraps a fitted pipeline; scoring any text that contains `FAIL` raises RuntimeError."""

    def __init__(self, pipeline: Any) -> None:
        self.classes_ = pipeline.classes_
        self._pipeline = pipeline

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        if any("FAIL" in text for text in texts):
            raise RuntimeError("this model fails on purpose")
        return np.asarray(self._pipeline.predict_proba(texts))


class RecordingSink:
    """A `PredictionSink` that keeps every event it is given, in order."""

    def __init__(self) -> None:
        self.events: list[PredictionEvent] = []

    def record(self, events: Sequence[PredictionEvent]) -> None:
        self.events.extend(events)
