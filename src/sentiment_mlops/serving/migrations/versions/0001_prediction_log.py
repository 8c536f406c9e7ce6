"""The prediction log: predictions and their feedback.

Revision ID: 0001
Revises:
Create Date: 2026-05-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("experiment", sa.String(128), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("probabilities", sa.JSON, nullable=False),
        sa.Column("text_sha256", sa.String(64), nullable=False),
        sa.Column("text_length", sa.Integer, nullable=False),
        sa.Column("subject_hash", sa.String(64)),
        sa.Column("text", sa.Text),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("shadow_of", sa.String(36)),
    )
    op.create_index(
        "ix_predictions_experiment_created", "predictions", ["experiment", "created_at"]
    )
    op.create_index("ix_predictions_created", "predictions", ["created_at"])
    op.create_index("ix_predictions_shadow_of", "predictions", ["shadow_of"])
    op.create_table(
        "feedback",
        sa.Column(
            "prediction_id",
            sa.String(36),
            sa.ForeignKey("predictions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("predictions")
