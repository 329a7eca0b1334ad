"""agreements under change control

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 13:40:00.000000

Each version of the agreements is kept with its state (proposed, approved, rejected,
superseded), who proposed and who approved it with which signature, when it takes effect, and
its diff from the version in force. Incidents name the approved version they opened under;
incidents opened before this revision name none. Constraints are named as PostgreSQL would name
them, so a database migrated on either engine has the same names.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agreement_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("content_sha256", sa.String(), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("based_on", sa.Integer(), nullable=True),
        sa.Column("diff", sa.Text(), nullable=False),
        sa.Column("proposed_by", sa.String(), nullable=False),
        sa.Column("proposed_at", sa.DateTime(), nullable=False),
        sa.Column("approved_by", sa.String(), nullable=True),
        sa.Column("approved_at", sa.DateTime(), nullable=True),
        sa.Column("approval_signature", sa.JSON(), nullable=True),
        sa.Column("effective_at", sa.DateTime(), nullable=True),
        sa.Column("rejected_by", sa.String(), nullable=True),
        sa.Column("rejected_at", sa.DateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("superseded_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="agreement_versions_pkey"),
    )
    op.create_index(
        "ix_agreement_versions_content_sha256", "agreement_versions", ["content_sha256"]
    )
    op.create_index(
        "ix_agreement_versions_state_effective", "agreement_versions", ["state", "effective_at"]
    )
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agreements_version_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "incidents_agreements_version_id_fkey",
            "agreement_versions",
            ["agreements_version_id"],
            ["id"],
        )
