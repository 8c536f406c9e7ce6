"""The account a prediction's text addresses, for the feature store's `account` entity.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: earlier rows, and requests that name no account, have none.
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("account", sa.String(256)))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("account")
