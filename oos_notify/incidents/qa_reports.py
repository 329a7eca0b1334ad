"""What the manufacturer's QA is told of, beside the escalation: the center's answers, and the
notifications that could not be delivered."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.incidents.planning import DELIVERY_FAILURE_TEMPLATE, plan_to_qa
from oos_notify.store import outbox
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
    session: Session, notification: Notification, now: datetime, mail_domain: str
) -> None:
    """Tell QA that ``notification`` failed for good, linked to it so the report can say why.
    A message to QA that failed is not reported: the report would go to the address that just
    refused mail, and could loop."""
    if NotificationKind(notification.kind).reports_to_qa:
        return
    incident = session.get(Incident, notification.incident_id)
    assert incident is not None
    reports = plan_to_qa(
        EffectiveAgreement.stored(incident.agreement),
        incident.qa_contact,
        NotificationKind.DELIVERY_FAILURE,
        DELIVERY_FAILURE_TEMPLATE,
        now,
        Condition.ALWAYS,
    )
    for report_id, _ in outbox.schedule(session, incident.id, reports, now, mail_domain):
        session.add(
            FailureReport(notification_id=report_id, failed_notification_id=notification.id)
        )
