"""decision proposals, signers' names and who confirmed for a shared mailbox

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 14:00:00.000000

A revision of a decision is a proposal until a second QA user approves it: proposals get a table
of their own. Console accounts get the name printed on what their person signs (accounts from
before this revision have none until the operator sets it). A confirmation through a shared
mailbox's link records the person who confirmed. Every new column is nullable, so existing rows
stay as they were. Constraints are named as PostgreSQL would name them, so a database migrated
on either engine has the same names.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "decision_proposals",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.Column("response", sa.String(), nullable=False),
        sa.Column("decided_by", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("proposed_by", sa.String(), nullable=False),
        sa.Column("proposed_for", sa.JSON(), nullable=True),
        sa.Column("proposal_signature", sa.JSON(), nullable=True),
        sa.Column("proposed_at", sa.DateTime(), nullable=False),
        sa.Column("settled_by", sa.String(), nullable=True),
        sa.Column("settled_signature", sa.JSON(), nullable=True),
        sa.Column("settled_at", sa.DateTime(), nullable=True),
        sa.Column("acknowledgement_id", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="decision_proposals_incident_id_fkey"
        ),
        sa.PrimaryKeyConstraint("id", name="decision_proposals_pkey"),
    )
    op.create_index("ix_decision_proposals_incident_id", "decision_proposals", ["incident_id"])

    with op.batch_alter_table("console_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(), nullable=True))

    with op.batch_alter_table("acknowledgements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confirmed_by", sa.String(), nullable=True))
