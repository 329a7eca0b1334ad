"""claim owners and shared event buckets

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:32:22.837452
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("key_id", sa.String(), nullable=False),
        sa.Column("allowed_from", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_notifications_claimed_by"), ["claimed_by"], unique=False
        )
