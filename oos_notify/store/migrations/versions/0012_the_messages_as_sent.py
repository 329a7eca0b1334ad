"""the messages as sent

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 13:50:00.000000

Each message a mail server accepts is kept as it went on the wire, compressed, so that the
console shows what the center received. Messages sent before this revision were not kept: their
notifications say so. Constraints are named as PostgreSQL would name them, so a database
migrated on either engine has the same names.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sent_messages",
        sa.Column("notification_id", sa.String(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("compressed", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["notification_id"], ["notifications.id"], name="sent_messages_notification_id_fkey"
        ),
        sa.PrimaryKeyConstraint("notification_id", name="sent_messages_pkey"),
    )
