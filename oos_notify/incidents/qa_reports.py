"""What the manufacturer's QA is told of, beside the escalation: the center's answers, and the
notifications that could not be delivered."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.incidents.planning import DELIVERY_FAILURE_TEMPLATE, plan_to_qa
from oos_notify.store import audit, outbox
from oos_notify.store.lifecycle import Condition, NotificationKind
from oos_notify.store.models import FailureReport, Incident, Notification
from oos_notify.store.outbox import PlannedNotification


def receipts(
    incident: Incident, agreement: EffectiveAgreement, template: str, now: datetime
) -> list[PlannedNotification]:
    """The manufacturer hears of the answer at once."""
    return plan_to_qa(
        agreement,
        incident.qa_contact,
        NotificationKind.RECEIPT,
        template,
        now,
        Condition.ACKNOWLEDGED,
    )


def delivery_failure(
    session: Session,
    notification: Notification,
    now: datetime,
    mail_domain: str,
    reason: str,
    actor: str,
) -> bool:
    """Tell QA that ``notification`` failed for good (``reason``), linked to it so the report can
    say why; return whether a report was scheduled. When none can be, the incident's trail says
    QA was not told, with ``actor`` (who found the failure), so that nobody takes the silence
    for news that all is well."""
    if NotificationKind(notification.kind).reports_to_qa:
        # The report would go to the address that just failed, and could loop.
        return _not_told(session, notification, now, reason, actor, "the failed message was to QA")
    incident = session.get(Incident, notification.incident_id)
    assert incident is not None
    try:
        reports = plan_to_qa(
            EffectiveAgreement.stored(incident.agreement),
            incident.qa_contact,
            NotificationKind.DELIVERY_FAILURE,
            DELIVERY_FAILURE_TEMPLATE,
            now,
            Condition.ALWAYS,
        )
    except Exception as exc:  # nothing is written yet: the failure is recorded, not lost
        because = f"the report cannot be planned: {type(exc).__name__}"
        return _not_told(session, notification, now, reason, actor, because)
    if not reports:
        return _not_told(
            session, notification, now, reason, actor, "there is no QA contact to tell"
        )
    for report_id, _ in outbox.schedule(session, incident.id, reports, now, mail_domain):
        session.add(
            FailureReport(notification_id=report_id, failed_notification_id=notification.id)
        )
    return True


def _not_told(
    session: Session,
    notification: Notification,
    now: datetime,
    reason: str,
    actor: str,
    because: str,
) -> bool:
    audit.record(
        session,
        now,
        "qa_not_told",
        actor,
        incident_id=notification.incident_id,
        notification_id=notification.id,
        recipient=notification.recipient_email,
        reason=reason,
        because=because,
    )
    return False
