"""call tasks and timers

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 07:28:41.781388

Call tasks (a phone call an agreement requires, with whom the caller reached and the outcome),
the link from a message to the call task it is about, and timers: instants at which the service
acts with no event arriving (a severity rule's threshold crossed, a call task's deadline). New
tables only: no existing row changes. Constraints and indexes are named as PostgreSQL would name
them, so a database migrated on either engine has the same names.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "call_tasks",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.Column("rule", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("caller_role", sa.String(), nullable=False),
        sa.Column("escalate", sa.JSON(), nullable=True),
        sa.Column("numbers", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("escalated_at", sa.DateTime(), nullable=True),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("closed_by", sa.String(), nullable=True),
        sa.Column("reached_name", sa.String(), nullable=True),
        sa.Column("reached_number", sa.String(), nullable=True),
        sa.Column("reached_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="call_tasks_incident_id_fkey"
        ),
        sa.PrimaryKeyConstraint("id", name="call_tasks_pkey"),
    )
    op.create_index("ix_call_tasks_due_at", "call_tasks", ["due_at"], unique=False)
    op.create_index("ix_call_tasks_incident_id", "call_tasks", ["incident_id"], unique=False)
    op.create_index("ix_call_tasks_status", "call_tasks", ["status"], unique=False)

    op.create_table(
        "timers",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("subject_id", sa.String(), nullable=True),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], name="timers_incident_id_fkey"),
        sa.PrimaryKeyConstraint("id", name="timers_pkey"),
    )
    op.create_index("ix_timers_due", "timers", ["status", "due_at"], unique=False)
    op.create_index("ix_timers_incident_id", "timers", ["incident_id"], unique=False)

    op.create_table(
        "call_task_notices",
        sa.Column("notification_id", sa.String(), nullable=False),
        sa.Column("call_task_id", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_task_id"], ["call_tasks.id"], name="call_task_notices_call_task_id_fkey"
        ),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name="call_task_notices_notification_id_fkey",
        ),
        sa.PrimaryKeyConstraint("notification_id", name="call_task_notices_pkey"),
    )
    op.create_index(
        "ix_call_task_notices_call_task_id", "call_task_notices", ["call_task_id"], unique=False
    )
