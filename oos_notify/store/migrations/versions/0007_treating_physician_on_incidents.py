"""treating physician on incidents

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 07:28:33.721888

The patient's treating physician an opening event names, and when that physician confirmed.
Both are nullable: incidents opened before this revision name none, and their site deciders
decide as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("treating_physician", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("physician_confirmed_at", sa.DateTime(), nullable=True))
