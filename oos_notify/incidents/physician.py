"""The patient's treating physician an event names: told first, asked to decide, and followed
up until they confirm themselves.

The physician need not be a contact of the site, so they are addressed under a contact id no
agreement can hold (agreement ids have no colon). A coordinator's confirmation stops the
center's escalation, not the physician's own steps: those wait for the physician's confirmation
or decision (``Condition.PHYSICIAN_UNCONFIRMED``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col

from oos_notify.agreements.business_time import CenterCalendar
from oos_notify.agreements.config import EffectiveAgreement, PhysicianStep
from oos_notify.agreements.durations import parse_duration
from oos_notify.agreements.vocabulary import CenterRole, KeyDate
from oos_notify.incidents.planning import (
    IncidentFacts,
    PlanResult,
    SkippedStep,
    _business_hours_apply,
    _due_at,
    plan_for,
)
from oos_notify.store import audit, outbox
from oos_notify.store.lifecycle import Condition, NotificationKind
from oos_notify.store.models import Incident, Notification
from oos_notify.store.outbox import Addressee, PlannedNotification

TREATING_PHYSICIAN_ID = "event:treating_physician"
"""The contact id of the treating physician an event names, in notifications and answers."""


def addressee(treating_physician: Mapping[str, Any] | None) -> Addressee | None:
    """The treating physician as messages address them, if the incident names one."""
    if not treating_physician:
        return None
    return Addressee(
        TREATING_PHYSICIAN_ID,
        CenterRole.PHYSICIAN.value,
        treating_physician["name"],
        treating_physician["email"],
    )


def is_treating_physician(notification: Notification) -> bool:
    return notification.contact_id == TREATING_PHYSICIAN_ID


def steps_of(agreement: EffectiveAgreement, facts: IncidentFacts) -> list[PhysicianStep]:
    """The plan's steps for the treating physician; without any, its first message at once."""
    plan = plan_for(agreement, facts.event_type)
    if plan.treating_physician is not None:
        return list(plan.treating_physician)
    return [PhysicianStep(after=parse_duration("0m"), template=plan.steps[0].template)]


def plan_steps(
    agreement: EffectiveAgreement,
    facts: IncidentFacts,
    person: Addressee,
    trigger_at: datetime,
    *,
    only_before: Collection[KeyDate] | None = None,
    sent: Collection[tuple[NotificationKind, int]] = (),
) -> PlanResult:
    """The treating physician's steps from ``trigger_at`` (the opening, or a late result's
    restart), each with the physician's own link; with ``only_before``, just those due before
    the key dates that moved, and none already sent."""
    plan = plan_for(agreement, facts.event_type)
    calendar = CenterCalendar.of(agreement)
    business_hours = _business_hours_apply(plan, facts)
    planned: list[PlannedNotification] = []
    skipped: list[SkippedStep] = []
    for level, step in enumerate(steps_of(agreement, facts)):
        if only_before is not None and step.before not in only_before:
            continue
        if (NotificationKind.PHYSICIAN, level) in sent:
            continue
        due_at = _due_at(step, facts, calendar, trigger_at, business_hours)
        if due_at is None:
            reason = f"the incident has no key date {step.before}"
            skipped.append(SkippedStep(NotificationKind.PHYSICIAN, level, reason))
            continue
        planned.append(
            PlannedNotification(
                kind=NotificationKind.PHYSICIAN,
                level=level,
                role=person.role,
                contact_id=person.contact_id,
                recipient_name=person.name,
                recipient_email=person.email,
                template=step.template,
                due_at=due_at,
                condition=Condition.PHYSICIAN_UNCONFIRMED,
                with_ack_link=True,
                anchor=step.before,
            )
        )
    return PlanResult(planned, skipped)


def mark_confirmed(session: Session, incident: Incident, actor: str, now: datetime) -> bool:
    """Record that the treating physician confirmed (or decided), once per round, and cancel
    their steps still waiting. Returns whether this was the first time."""
    won = session.execute(
        update(Incident)
        .where(col(Incident.id) == incident.id, col(Incident.physician_confirmed_at).is_(None))
        .values(physician_confirmed_at=now, updated_at=now)
    )
    if won.rowcount != 1:  # type: ignore[attr-defined]
        return False
    audit.record(session, now, "physician_confirmed", actor, incident_id=incident.id)
    outbox.cancel_pending(
        session,
        incident.id,
        now,
        "the treating physician confirmed",
        col(Notification.condition) == Condition.PHYSICIAN_UNCONFIRMED.value,
    )
    return True


def restart(
    session: Session,
    incident: Incident,
    agreement: EffectiveAgreement,
    facts: IncidentFacts,
    now: datetime,
) -> PlanResult:
    """A late result is news the physician must confirm again: their confirmation is cleared
    and their steps start over under the incident's plan now."""
    person = addressee(incident.treating_physician)
    if person is None:
        return PlanResult([], [])
    outbox.cancel_pending(
        session,
        incident.id,
        now,
        "a late result restarted the treating physician's steps",
        col(Notification.kind) == NotificationKind.PHYSICIAN.value,
    )
    incident.physician_confirmed_at = None
    return plan_steps(agreement, facts, person, now)


def move_steps(
    session: Session,
    incident: Incident,
    agreement: EffectiveAgreement,
    facts: IncidentFacts,
    moved: Collection[KeyDate],
    since: datetime,
    now: datetime,
) -> PlanResult:
    """The physician's steps due before a key date that moved follow it, while the physician
    has not confirmed; a step already sent is not sent again."""
    person = addressee(incident.treating_physician)
    if person is None or not moved:
        return PlanResult([], [])
    outbox.cancel_pending(
        session,
        incident.id,
        now,
        "its key date moved",
        col(Notification.kind) == NotificationKind.PHYSICIAN.value,
        col(Notification.anchor).in_([k.value for k in moved]),
    )
    if incident.physician_confirmed_at is not None:
        return PlanResult([], [])
    sent = outbox.sent_steps(session, incident.id, since=since)
    return plan_steps(agreement, facts, person, now, only_before=moved, sent=sent)
