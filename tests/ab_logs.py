"""Prediction logs with known outcomes, for the A/B report's tests: rows as the server writes
them (serving/predictions.py), feedback on the primary prediction, shadow rows pointing at it.

The true label of every request is `TRUTH`; a model was right when it predicted it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine

from sentiment_mlops.serving.predictions import feedback, metadata, new_prediction_id, predictions

START = datetime(2026, 11, 2, tzinfo=UTC)
TRUTH = "positive"
WRONG = "negative"


def new_log(folder: Path) -> str:
    """An empty prediction log (both tables) in a SQLite file; its URL."""
    url = f"sqlite:///{folder / 'predictions.db'}"
    engine = create_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    return url


@dataclass(frozen=True)
class Request:
    variant: str
    version: int
    right: bool
    labelled: bool
    shadow: tuple[str, int, bool] | None = None  # variant, version, right


@dataclass
class LogBuilder:
    """Requests of one experiment, written in a seeded random order, one second apart."""

    experiment: str = "exp-1"
    requests: list[Request] = field(default_factory=list)

    def served(
        self, variant: str, version: int, *, right: int, wrong: int, unlabelled: int = 0
    ) -> LogBuilder:
        """Requests answered by `variant`: `right` and `wrong` with feedback, `unlabelled`
        (right or wrong alike: nobody said) without."""
        self.requests += [Request(variant, version, True, True)] * right
        self.requests += [Request(variant, version, False, True)] * wrong
        self.requests += [Request(variant, version, True, False)] * unlabelled
        return self

    def paired(
        self,
        primary: tuple[str, int],
        shadow: tuple[str, int],
        *,
        both: int,
        only_shadow: int,
        only_primary: int,
        neither: int,
        unlabelled: int = 0,
    ) -> LogBuilder:
        """Requests answered by `primary` and scored in shadow by `shadow`, with feedback by
        outcome (which of the two was right), and `unlabelled` ones."""
        for count, primary_right, shadow_right, labelled in (
            (both, True, True, True),
            (only_shadow, False, True, True),
            (only_primary, True, False, True),
            (neither, False, False, True),
            (unlabelled, True, True, False),
        ):
            request = Request(*primary, primary_right, labelled, (*shadow, shadow_right))
            self.requests += [request] * count
        return self

    def write(
        self,
        url: str,
        *,
        seed: int = 0,
        start: datetime = START,
        shuffle: bool = True,
        label_delay: float = 0.0,
        until: datetime | None = None,
    ) -> None:
        """Requests one second apart from `start` (shuffled, or in the order they were added),
        each label arriving after an exponential delay of mean `label_delay` seconds; with
        `until`, only what the log would hold at that moment (the same draws for every
        `until`, so several calls show one experiment at several reads)."""
        rows: list[dict[str, object]] = []
        labels: list[dict[str, object]] = []
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self.requests)) if shuffle else np.arange(len(self.requests))
        delays = rng.exponential(label_delay, len(self.requests)) if label_delay else None
        for position, index in enumerate(order.tolist()):
            request = self.requests[index]
            at = start + timedelta(seconds=position)
            if until is not None and at > until:
                break
            primary_id = new_prediction_id()
            rows.append(
                _row(
                    primary_id,
                    at,
                    self.experiment,
                    request.variant,
                    request.version,
                    request.right,
                    None,
                )
            )
            if request.shadow is not None:
                variant, version, right = request.shadow
                rows.append(
                    _row(
                        new_prediction_id(),
                        at + timedelta(milliseconds=1),
                        self.experiment,
                        variant,
                        version,
                        right,
                        primary_id,
                    )
                )
            received = at if delays is None else at + timedelta(seconds=float(delays[position]))
            if request.labelled and (until is None or received <= until):
                labels.append(
                    {"prediction_id": primary_id, "label": TRUTH, "received_at": received}
                )
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(predictions.insert(), rows)
            if labels:
                conn.execute(feedback.insert(), labels)
        engine.dispose()


def _row(
    prediction_id: str,
    at: datetime,
    experiment: str,
    variant: str,
    version: int,
    right: bool,
    shadow_of: str | None,
) -> dict[str, object]:
    return {
        "id": prediction_id,
        "created_at": at,
        "experiment": experiment,
        "variant": variant,
        "model_version": version,
        "label": TRUTH if right else WRONG,
        "probabilities": {TRUTH: 0.9 if right else 0.1, WRONG: 0.1 if right else 0.9},
        "text_sha256": "0" * 64,
        "text_length": 20,
        "subject_hash": None,
        "account": None,
        "text": None,
        "latency_ms": 0.2 + (version % 3) * 0.05,
        "shadow_of": shadow_of,
    }
