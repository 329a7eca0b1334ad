"""deciders' passkeys

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 13:50:00.000000

Deciders sign their decisions with a passkey enrolled once from an emailed link: each enrolled
credential's public key, the person it identifies and the name they are printed with. Constraints
are named as PostgreSQL would name them, so a database migrated on either engine has the same
names.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "passkey_credentials",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("person", sa.String(), nullable=False),
        sa.Column("printed_name", sa.String(), nullable=False),
        sa.Column("public_key", sa.String(), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(), nullable=False),
        sa.Column("enrolled_from", sa.String(), nullable=False),
        sa.Column("removed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["enrolled_from"], ["notifications.id"], name="passkey_credentials_enrolled_from_fkey"
        ),
        sa.PrimaryKeyConstraint("id", name="passkey_credentials_pkey"),
    )
    op.create_index("ix_passkey_credentials_person", "passkey_credentials", ["person"])
