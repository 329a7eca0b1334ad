"""console accounts, returned mail and the clinical fields

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 12:28:07.846986

The console's accounts, sessions and sign-in attempts; the mail that comes back to the return
addresses and the replies forwarded to QA; and the clinical facts of incidents (product state,
infusion, the current round's start, an offer of an out-of-specification product, re-manufacture,
the basis of a within-specification release) and of answers (whether one stopped the escalation,
a decision's signature, QA's revision of it, the number to call back). Every new column is
nullable, so the rows of older versions stay as they were: a NULL ``stopped_escalation`` reads as
"stopped", which every acknowledgement before this revision did. Constraints and indexes are
named here as PostgreSQL would name them, so a database migrated on either engine has the same
names.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_users",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("password_changed_at", sa.DateTime(), nullable=False),
        sa.Column("disabled_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="console_users_pkey"),
    )
    op.create_index("ix_console_users_email", "console_users", ["email"], unique=True)

    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("csrf_token", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("client_address", sa.String(), nullable=True),
        sa.Column("user_agent", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["console_users.id"], name="console_sessions_user_id_fkey"
        ),
        sa.PrimaryKeyConstraint("id", name="console_sessions_pkey"),
    )
    op.create_index("ix_console_sessions_user_id", "console_sessions", ["user_id"], unique=False)

    op.create_table(
        "console_sign_in_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("client_address", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="console_sign_in_attempts_pkey"),
    )
    op.create_index(
        "ix_console_sign_in_attempts_email_at",
        "console_sign_in_attempts",
        ["email", "at"],
        unique=False,
    )
    op.create_index(
        "ix_console_sign_in_attempts_client_at",
        "console_sign_in_attempts",
        ["client_address", "at"],
        unique=False,
    )

    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("uid", sa.BigInteger(), nullable=True),
        sa.Column("message_key", sa.String(), nullable=True),
        sa.Column("message_id", sa.String(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("notification_id", sa.String(), nullable=True),
        sa.Column("incident_id", sa.String(), nullable=True),
        sa.Column("sender", sa.String(), nullable=True),
        sa.Column("subject", sa.String(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="inbound_messages_incident_id_fkey"
        ),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name="inbound_messages_notification_id_fkey",
        ),
        sa.PrimaryKeyConstraint("id", name="inbound_messages_pkey"),
        sa.UniqueConstraint("message_key", name="inbound_messages_message_key_key"),
        sa.UniqueConstraint("source", "uidvalidity", "uid", name="uq_inbound_messages_place"),
    )
    for column in ("received_at", "kind", "outcome", "notification_id", "incident_id"):
        op.create_index(f"ix_inbound_messages_{column}", "inbound_messages", [column], unique=False)

    op.create_table(
        "forwarded_replies",
        sa.Column("notification_id", sa.String(), nullable=False),
        sa.Column("inbound_message_id", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbound_message_id"],
            ["inbound_messages.id"],
            name="forwarded_replies_inbound_message_id_fkey",
        ),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name="forwarded_replies_notification_id_fkey",
        ),
        sa.PrimaryKeyConstraint("notification_id", name="forwarded_replies_pkey"),
    )
    op.create_index(
        "ix_forwarded_replies_inbound_message_id",
        "forwarded_replies",
        ["inbound_message_id"],
        unique=False,
    )

    # Nullable columns only: SQLite adds each in place (ALTER TABLE … ADD COLUMN), without the
    # copy-and-move a batch needs for other changes, so the busiest tables are not rewritten.
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("product_status", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("infused_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("escalation_started_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("oos_release", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("remanufacture", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("within_spec_basis", sa.JSON(), nullable=True))

    with op.batch_alter_table("acknowledgements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stopped_escalation", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("signature", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("revision", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("callback_phone", sa.String(), nullable=True))
