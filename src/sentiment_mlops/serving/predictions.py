"""The prediction log: one row per prediction served (or scored in shadow), and the feedback
joined to it later. SQLAlchemy 2 Core tables; SQLite under `var/` by default, PostgreSQL in
production (`SENTIMENT_DATABASE_URL`).

The tables are the contract between the server, which writes them, and the A/B report
(`abtest/log.py`), which reads them:

- `predictions`: `id` is the prediction id the API returned, a UUIDv7 (time-ordered, so the
  time a prediction was made can be read from its id even after its row is gone); a shadow
  prediction has its own id and `shadow_of` names the primary prediction of the same request,
  which is how the report pairs the two models on the same texts. `subject_hash` is the keyed
  hash of the user id (or the token's subject; `subjects.subject_hash`, HMAC-SHA256 under
  `SENTIMENT_SUBJECT_KEY`), never the id itself; `account` is the account the
  request said the text addresses (an airline's handle, not personal data), kept as given for
  the feature store's `account` entity; `text` is kept only when the operator enables it.
  `latency_ms` is the model's scoring time for the request.
- `feedback`: the true label of a primary prediction, at most one per prediction.
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from sentiment_mlops.serving.random_bytes import random_bytes

# The experiment of predictions whose variant an admin chose: not part of any A/B comparison.
OVERRIDE_EXPERIMENT = "override"

metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("experiment", String(128), nullable=False),
    Column("variant", String(64), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("label", String(128), nullable=False),
    Column("probabilities", JSON, nullable=False),
    Column("text_sha256", String(64), nullable=False),
    Column("text_length", Integer, nullable=False),
    Column("subject_hash", String(64)),
    Column("account", String(256)),
    Column("text", Text),
    Column("latency_ms", Float, nullable=False),
    Column("shadow_of", String(36)),
    Index("ix_predictions_experiment_created", "experiment", "created_at"),
    Index("ix_predictions_created", "created_at"),
    Index("ix_predictions_shadow_of", "shadow_of"),
)

feedback = Table(
    "feedback",
    metadata,
    Column(
        "prediction_id",
        String(36),
        ForeignKey("predictions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("label", String(128), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)


def new_prediction_id(now_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits."""
    millis = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (millis & (1 << 48) - 1) << 80 | int.from_bytes(random_bytes(10))
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
    digits = f"{value:032x}"  # as str(uuid.UUID(int=value)), without building the UUID
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def prediction_time_ms(prediction_id: str) -> int | None:
    """When a UUIDv7 prediction id was made (Unix ms); None for anything else."""
    try:
        parsed = uuid.UUID(prediction_id)
    except ValueError:
        return None
    if parsed.version != 7:
        return None
    return parsed.int >> 80
