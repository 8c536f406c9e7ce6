"""Predictions as the predictor hands them to the log, and reading back what the log holds."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, select

from sentiment_mlops.serving.predictions import new_prediction_id, predictions
from sentiment_mlops.serving.predictor import PredictionEvent

BOUND = 30.0  # seconds a thread may take before a test calls it stuck (never a speed check)
# The subject key of test apps and logs (`tests.apps.api_settings` configures it).
SUBJECT_KEY = b"prediction-log-tests-subject-key-0123456789"


def keyed_hash(subject: str, key: bytes = SUBJECT_KEY) -> str:
    """HMAC-SHA256 of `subject` under `key`, computed here with the standard library, not by
    the code under test."""
    return hmac.new(key, subject.encode(), hashlib.sha256).hexdigest()


def event(
    text: str = "a fine flight", subject: str | None = "user-7", **fields: Any
) -> PredictionEvent:
    """One primary prediction made now (override any field by name)."""
    values: dict[str, Any] = {
        "prediction_id": new_prediction_id(),
        "created_at": datetime.now(UTC),
        "experiment": "default",
        "variant": "champion",
        "model_version": 3,
        "label": "positive",
        "probabilities": {"negative": 0.25, "positive": 0.75},
        "text": text,
        "subject": subject,
        "latency_ms": 0.05,
        "shadow_of": None,
        **fields,
    }
    return PredictionEvent(**values)


def logged_rows(url: str) -> dict[str, dict[str, Any]]:
    """Every row of the log at `url`, by prediction id (a connection of the test's own)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(predictions)).mappings().all()
    finally:
        engine.dispose()
    return {row["id"]: dict(row) for row in rows}
