"""the patient's indication on the incident

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 07:29:24.469887

What the patient is treated for, so the messages cite the label's infusion window for that
indication. Nullable: incidents opened before it name none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("indication", sa.String(), nullable=True))
