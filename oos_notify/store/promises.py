"""The ``notify_within`` promise counts deliveries, not hand-offs: a first notice that bounces
counts against it until a later notice to the same role (or the backup standing in for it) is
delivered.

``Incident.first_delivered_at`` is when the promise was met. A bounce of a notice that had
counted takes it back; a later delivery sets it again only once every role whose notice
bounced has had one delivered since.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from oos_notify.agreements.vocabulary import BACKUP_ROLES
from oos_notify.store import audit
from oos_notify.store.lifecycle import NotificationKind, NotificationStatus
from oos_notify.store.models import Incident, Notification

_ROWS = Notification.__table__  # type: ignore[attr-defined]
_INCIDENTS = Incident.__table__  # type: ignore[attr-defined]
_FIRST = NotificationKind.ESCALATION.value
"""The notices the promise is about: the plan's steps to the center, the first one's bounce."""
_REACHING = (NotificationKind.ESCALATION.value, NotificationKind.FOLLOW_UP.value)
"""The notices whose delivery reaches a role again after its first notice bounced."""


@dataclass(frozen=True)
class Notice:
    role: str
    status: str
    sent_at: datetime | None
    first: bool
    """A first notice (the plan's first step), whose bounce counts against the promise."""
    step: bool = True
    """A step of the plan (not a follow-up): its delivery can meet the promise on its own."""


def met_at(notices: Sequence[Notice]) -> datetime | None:
    """When the promise was met: the first delivery, and for each notice that bounced the next
    delivery to its role (or its backup) after it; None while any of these is missing."""
    delivered = [n for n in notices if n.status == NotificationStatus.SENT and n.sent_at]
    firsts = [n.sent_at for n in delivered if n.step and n.sent_at]
    if not firsts:
        return None
    met = min(firsts)
    for bounced in notices:
        if not bounced.first or bounced.status != NotificationStatus.FAILED or not bounced.sent_at:
            continue
        roles = {bounced.role, BACKUP_ROLES.get(bounced.role, bounced.role)}
        later = [
            n.sent_at
            for n in delivered
            if n.role in roles and n.sent_at and n.sent_at >= bounced.sent_at
        ]
        if not later:
            return None
        met = max(met, min(later))
    return met


def _notices(session: Session, incident_id: str) -> list[Notice]:
    rows = session.execute(
        select(_ROWS.c.role, _ROWS.c.status, _ROWS.c.sent_at, _ROWS.c.kind, _ROWS.c.level).where(
            _ROWS.c.incident_id == incident_id, _ROWS.c.kind.in_(_REACHING)
        )
    ).all()
    return [
        Notice(
            row.role,
            row.status,
            row.sent_at,
            first=row.kind == _FIRST and row.level == 0,
            step=row.kind == _FIRST,
        )
        for row in rows
    ]


def with_bounces(session: Session, incident_ids: Collection[str]) -> set[str]:
    """The incidents among these with a first notice that bounced after it was handed off."""
    if not incident_ids:
        return set()
    rows = session.execute(
        select(_ROWS.c.incident_id)
        .where(
            _ROWS.c.incident_id.in_(incident_ids),
            _ROWS.c.kind == _FIRST,
            _ROWS.c.level == 0,
            _ROWS.c.status == NotificationStatus.FAILED.value,
            _ROWS.c.sent_at.is_not(None),
        )
        .distinct()
    ).all()
    return {row.incident_id for row in rows}


def met_after_bounce(session: Session, incident_id: str) -> datetime | None:
    """When an incident with a bounced notice met its promise, read from its notices."""
    return met_at(_notices(session, incident_id))


def reopen_after_bounce(session: Session, notification: Notification, now: datetime) -> None:
    """A first notice bounced: the promise is met only as the remaining deliveries say."""
    if notification.kind != _FIRST or notification.level != 0:
        return
    row = session.execute(
        select(_INCIDENTS.c.first_delivered_at, _INCIDENTS.c.notify_deadline).where(
            _INCIDENTS.c.id == notification.incident_id
        )
    ).one()
    if row.first_delivered_at is None:
        return
    met = met_after_bounce(session, notification.incident_id)
    if met == row.first_delivered_at:
        return
    session.execute(
        _INCIDENTS.update()
        .where(_INCIDENTS.c.id == notification.incident_id)
        .values(first_delivered_at=met)
    )
    audit.record(
        session,
        now,
        "notify_within_reopened",
        "dispatcher",
        incident_id=notification.incident_id,
        notification_id=notification.id,
        role=notification.role,
        deadline=row.notify_deadline.isoformat() if row.notify_deadline else None,
        reason="the first notice bounced: the promise counts deliveries, not hand-offs",
    )
