"""drills and the center's own reports

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 07:28:11.007853

Incidents say whether they are a drill; every incident before this revision was real, which the
column's default writes into the existing rows (SQLite adds a NOT NULL column with a default in
place). What a center says from its link or in a reply (a lymphodepletion started or postponed,
the product received, a request to be called) gets a table of its own, and a link from each
message to QA that tells of one. Constraints are named as
PostgreSQL would name them, so a database migrated on either engine has the same names.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "center_reports",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.Column("notification_id", sa.String(), nullable=False),
        sa.Column("contact_id", sa.String(), nullable=False),
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("day", sa.Date(), nullable=True),
        sa.Column("phone", sa.String(), nullable=True),
        sa.Column("call_window", sa.String(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("event_id", sa.String(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="center_reports_incident_id_fkey"
        ),
        sa.ForeignKeyConstraint(
            ["notification_id"], ["notifications.id"], name="center_reports_notification_id_fkey"
        ),
        sa.PrimaryKeyConstraint("id", name="center_reports_pkey"),
    )
    op.create_index("ix_center_reports_incident_id", "center_reports", ["incident_id"])

    op.create_table(
        "center_report_receipts",
        sa.Column("notification_id", sa.String(), nullable=False),
        sa.Column("report_id", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name="center_report_receipts_notification_id_fkey",
        ),
        sa.ForeignKeyConstraint(
            ["report_id"], ["center_reports.id"], name="center_report_receipts_report_id_fkey"
        ),
        sa.PrimaryKeyConstraint("notification_id", name="center_report_receipts_pkey"),
    )
    op.create_index("ix_center_report_receipts_report_id", "center_report_receipts", ["report_id"])

    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("drill", sa.Boolean(), nullable=False, server_default=sa.false())
        )
