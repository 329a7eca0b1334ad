"""A decider who is away: an automatic reply to a decision request asks the deputy deciders the
agreement names (``decision.deputies: when_absent``), at once and once, while the decision is
still missing. QA is told by whoever reads the reply (``inbound``)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from oos_notify.agreements.vocabulary import Disposition
from oos_notify.incidents import offers
from oos_notify.incidents.planning import DECISION_TEMPLATE
from oos_notify.store import audit
from oos_notify.store.lifecycle import Condition, IncidentStatus, NotificationKind
from oos_notify.store.models import Incident, Notification
from oos_notify.store.outbox import PlannedNotification

DECIDER_ABSENT_TEMPLATE = "decider_absent"


def undecided(incident: Incident) -> bool:
    """Whether a decision is still awaited on an offered product."""
    return (
        incident.oos_release is not None
        and incident.decision is None
        and incident.disposition == Disposition.OOS_RELEASE_OFFERED
        and not IncidentStatus(incident.status).is_closed
    )


def ask_deputies(
    session: Session, incident: Incident, absent: Notification, actor: str, now: datetime
) -> list[PlannedNotification]:
    """The decision requests to the deputies not yet asked, due now; the offer records them as
    asked, so that they decide with their own links and are not asked twice."""
    offer = incident.oos_release
    if offer is None or not undecided(incident):
        return []
    away = absent.recipient_email.lower()
    deputies = [d for d in offers.stored_deputies(offer) if d.email.lower() != away]
    if not deputies:
        return []
    incident.oos_release = offers.with_deputies_asked(offer, deputies)
    audit.record(
        session,
        now,
        "deputies_asked",
        actor,
        incident_id=incident.id,
        notification_id=absent.id,
        absent=absent.recipient_email,
        deputies=[d.email for d in deputies],
    )
    return [
        PlannedNotification(
            kind=NotificationKind.DECISION,
            level=0,
            role=deputy.role,
            contact_id=deputy.contact_id,
            recipient_name=deputy.name,
            recipient_email=deputy.email,
            template=DECISION_TEMPLATE,
            due_at=now,
            condition=Condition.UNDECIDED,
            with_ack_link=True,
        )
        for deputy in deputies
    ]
