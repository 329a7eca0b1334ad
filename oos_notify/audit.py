"""The audit trail: one append-only entry for everything that happened to an incident."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from oos_notify.models import AuditEntry

_INSERT = AuditEntry.__table__.insert()  # type: ignore[attr-defined]
"""A Core insert, compiled once: the trail grows on every request's hot path."""


def record(
    session: Session,
    at: datetime,
    action: str,
    actor: str,
    *,
    incident_id: str | None = None,
    notification_id: str | None = None,
    **detail: Any,
) -> None:
    """Append an entry in the caller's transaction, so the trail and the change commit together.

    Written at once (not at the next flush), so entries are numbered in the order things happened.
    """
    session.execute(
        _INSERT,
        {
            "at": at,
            "action": action,
            "actor": actor,
            "incident_id": incident_id,
            "notification_id": notification_id,
            "detail": detail,
        },
    )
