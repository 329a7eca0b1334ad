"""A notice that reached nobody: refused for good by the mail server, or accepted and then
bounced. Both mean the same, whichever path found it: QA hears of it, and the escalation moves
forward for the role left unreached (``planning.bring_forward_for_unreached``), not for the
whole plan when others of the step were reached."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.incidents import acknowledgement, qa_reports
from oos_notify.incidents.planning import RoundNotice, bring_forward_for_unreached
from oos_notify.store import audit, outbox
from oos_notify.store.lifecycle import (
    Condition,
    IncidentStatus,
    NotificationKind,
    NotificationStatus,
)
from oos_notify.store.models import AuditEntry, Incident, Notification

log = logging.getLogger(__name__)
_REACHED = (NotificationStatus.SENT.value, NotificationStatus.SENDING.value)


def not_reached(
    session: Session,
    notification: Notification,
    now: datetime,
    mail_domain: str,
    reply: str,
    actor: str,
    cause: str,
) -> tuple[bool, dict[str, Any]]:
    """``notification`` failed for good (``reply`` says why, ``cause`` how it was found): bring
    forward what its role calls for, then tell QA, whose report says what was brought forward.
    Returns whether QA was told, and what moved (or why nothing did)."""
    incident = session.get(Incident, notification.incident_id)
    assert incident is not None
    try:
        advanced = bring_forward(session, notification, incident, now, actor, cause)
    except SQLAlchemyError:
        raise
    except Exception as exc:  # the stored agreement cannot be read; nothing is written yet
        log.error(
            "nothing could be brought forward for %s: %s: %s",
            notification.id,
            type(exc).__name__,
            exc,
            extra={"incident_id": incident.id, "notification_id": notification.id},
        )
        advanced = {"reason": f"the escalation cannot be planned: {type(exc).__name__}"}
    told = qa_reports.delivery_failure(session, notification, now, mail_domain, reply, actor)
    return told, advanced


def held_back(session: Session, notification: Notification, incident: Incident) -> str | None:
    """Why a notice that did not reach its recipient moves nothing forward, or None when it may:
    somebody whose confirmation would stop nothing (a cell lab) being away delays no
    confirmation, and an acknowledged or closed incident, or an earlier round, has nothing
    left to hurry."""
    if notification.kind != NotificationKind.ESCALATION:
        return "not an escalation notice"
    status = IncidentStatus(incident.status)
    if status.is_closed or status is IncidentStatus.ACKNOWLEDGED:
        return f"the incident is {status}"
    if notification_round(session, notification) != incident.ack_round:
        return "the notice is from an earlier round"
    agreement = EffectiveAgreement.stored(incident.agreement)
    if not acknowledgement.may_stop(agreement, incident.plan_type, notification):
        return "its recipient's confirmation would not stop the escalation"
    return None


def bring_forward(
    session: Session,
    notification: Notification,
    incident: Incident,
    now: datetime,
    actor: str,
    cause: str,
) -> dict[str, Any]:
    """Make due now the notices the unreached role calls for; say which, or why none."""
    reason = held_back(session, notification, incident)
    if reason is not None:
        return {"reason": reason}
    agreement = EffectiveAgreement.stored(incident.agreement)
    notices = [
        RoundNotice(
            notification_id=n.id,
            role=n.role,
            level=n.level,
            reached=n.status in _REACHED and n.id != notification.id,
            waiting=n.status == NotificationStatus.SCHEDULED.value
            and n.condition == Condition.UNACKNOWLEDGED.value,
            may_stop=acknowledgement.may_stop(agreement, incident.plan_type, n),
        )
        for n in _round_notices(session, incident)
    ]
    unreached = RoundNotice(
        notification.id, notification.role, notification.level, False, False, may_stop=True
    )
    forward = bring_forward_for_unreached(unreached, notices)
    if not forward.notification_ids:
        return {"reason": forward.reason}
    outbox.make_due(session, forward.notification_ids, now)
    audit.record(
        session,
        now,
        "escalation_advanced",
        actor,
        incident_id=incident.id,
        notification_id=notification.id,
        level=forward.level,
        cause=cause,
        reason=forward.reason,
        notifications=list(forward.notification_ids),
    )
    return {"next_step_level": forward.level, "brought_forward": list(forward.notification_ids)}


def brought_forward_by(session: Session, notification_id: str) -> list[Notification]:
    """The notices a notification that reached nobody brought forward, in their order."""
    entries = session.exec(
        select(AuditEntry.detail).where(
            AuditEntry.notification_id == notification_id,
            AuditEntry.action == "escalation_advanced",
        )
    ).all()
    ids = {i for detail in entries for i in detail.get("notifications", [])}
    if not ids:
        return []
    return list(
        session.exec(
            select(Notification)
            .where(col(Notification.id).in_(ids))
            .order_by(col(Notification.level), col(Notification.id))
        ).all()
    )


def notification_round(session: Session, notification: Notification) -> int:
    """The acknowledgement round a notification was planned in: each late result that restarted
    the escalation before it (in the audit trail's order) began one more."""
    scheduled = (
        select(func.min(AuditEntry.seq))
        .where(
            AuditEntry.notification_id == notification.id,
            AuditEntry.action == "notification_scheduled",
        )
        .scalar_subquery()
    )
    restarts = session.exec(
        select(func.count())
        .select_from(AuditEntry)
        .where(
            AuditEntry.incident_id == notification.incident_id,
            AuditEntry.action == "escalation_restarted",
            col(AuditEntry.seq) < scheduled,
        )
    ).one()
    return 1 + int(restarts)


def _round_notices(session: Session, incident: Incident) -> list[Notification]:
    """The incident's escalation notices planned since the escalation last (re)started."""
    restarted = (
        select(func.max(AuditEntry.seq))
        .where(
            AuditEntry.incident_id == incident.id,
            AuditEntry.action == "escalation_restarted",
        )
        .scalar_subquery()
    )
    planned = select(AuditEntry.notification_id).where(
        AuditEntry.incident_id == incident.id,
        AuditEntry.action == "notification_scheduled",
        col(AuditEntry.seq) > func.coalesce(restarted, 0),
    )
    return list(
        session.exec(
            select(Notification).where(
                Notification.incident_id == incident.id,
                Notification.kind == NotificationKind.ESCALATION.value,
                col(Notification.id).in_(planned),
            )
        ).all()
    )
