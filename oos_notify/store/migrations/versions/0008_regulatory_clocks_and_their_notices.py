"""regulatory clocks and their notices

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 07:50:27.502886

Reports owed to an authority by a set time after a transition of an incident (the EU's 48 h
notification after an out-of-specification batch is administered, a deviation report within 45
days of discovery), one row per clock and incident, closed by the report's reference; and the
link from each reminder or escalation in the outbox to the clock it is about. New tables only:
existing rows are untouched. Constraints and indexes are named as PostgreSQL would name them, so
a database migrated on either engine has the same names.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "regulatory_clocks",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.Column("clock_id", sa.String(), nullable=False),
        sa.Column("label", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("started_by", sa.String(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("report_reference", sa.String(), nullable=True),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("closed_by", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="regulatory_clocks_incident_id_fkey"
        ),
        sa.PrimaryKeyConstraint("id", name="regulatory_clocks_pkey"),
        sa.UniqueConstraint(
            "incident_id", "clock_id", name="regulatory_clocks_incident_id_clock_id_key"
        ),
    )
    op.create_index("ix_regulatory_clocks_due_at", "regulatory_clocks", ["due_at"], unique=False)
    op.create_index(
        "ix_regulatory_clocks_incident_id", "regulatory_clocks", ["incident_id"], unique=False
    )

    op.create_table(
        "regulatory_clock_notices",
        sa.Column("notification_id", sa.String(), nullable=False),
        sa.Column("clock_row_id", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clock_row_id"],
            ["regulatory_clocks.id"],
            name="regulatory_clock_notices_clock_row_id_fkey",
        ),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name="regulatory_clock_notices_notification_id_fkey",
        ),
        sa.PrimaryKeyConstraint("notification_id", name="regulatory_clock_notices_pkey"),
    )
    op.create_index(
        "ix_regulatory_clock_notices_clock_row_id",
        "regulatory_clock_notices",
        ["clock_row_id"],
        unique=False,
    )
