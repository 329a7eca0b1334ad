"""How a center did in a drill, against each promise of its agreement.

A drill runs like a real incident with the center's real contacts, so its report reads the same
rows: when the first notice was delivered against ``notify_within``, whether a role that may stop
the escalation confirmed before each escalation step fell due, whether an offered product was
decided before its deadline, and that no patient liaison was reached. Drills never count in the
real reports (``web.console.reports``); this is theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel
from sqlmodel import Session, col, select

from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.agreements.vocabulary import EventType, Severity
from oos_notify.errors import Conflict, NotFound
from oos_notify.incidents.queries import NotifyWithin, PromiseState
from oos_notify.store.lifecycle import NotificationKind, NotificationStatus
from oos_notify.store.models import Incident, Notification
from oos_notify.store.outbox import LIAISON_ROLES


class Outcome(StrEnum):
    KEPT = "kept"
    MISSED = "missed"
    PENDING = "pending"
    """Cannot be told yet: the drill is still running."""


class PromiseResult(BaseModel):
    promise: str
    """The agreement's promise, in words."""
    outcome: Outcome
    detail: str
    """What happened, in words."""


class DrillReport(BaseModel):
    incident_id: str
    incident_ref: str
    center_id: str
    opened_at: datetime
    acknowledged_at: datetime | None
    minutes_to_confirm: float | None
    """From the opening to the confirmation that stopped the escalation."""
    promises: list[PromiseResult]
    kept: int
    """How many promises were kept."""


def _minutes(delta: timedelta) -> str:
    minutes = round(delta.total_seconds() / 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def report(session: Session, incident: Incident, now: datetime) -> DrillReport:
    """The drill's outcome against each promise, as far as it has gone by ``now``."""
    if not incident.drill:
        raise Conflict(f"incident {incident.incident_ref!r} is not a drill")
    notifications = session.exec(
        select(Notification)
        .where(Notification.incident_id == incident.id)
        .order_by(col(Notification.due_at), col(Notification.id))
    ).all()
    promises = [
        *_notify_within(incident, now),
        *_confirmed_before_each_step(incident, notifications),
        *_decided_in_time(incident, notifications, now),
        _no_liaison(notifications),
    ]
    confirmed = incident.acknowledged_at
    return DrillReport(
        incident_id=incident.id,
        incident_ref=incident.incident_ref,
        center_id=incident.center_id,
        opened_at=incident.opened_at,
        acknowledged_at=confirmed,
        minutes_to_confirm=round((confirmed - incident.opened_at).total_seconds() / 60, 1)
        if confirmed
        else None,
        promises=promises,
        kept=sum(1 for p in promises if p.outcome is Outcome.KEPT),
    )


def _notify_within(incident: Incident, now: datetime) -> list[PromiseResult]:
    promise = NotifyWithin.of(incident, now)
    if promise is None:
        return []
    agreement = EffectiveAgreement.stored(incident.agreement)
    within = agreement.notify_within.get(Severity(incident.severity))
    words = f"First notice delivered within {within} ({incident.severity})"
    delivered = promise.first_delivered_at
    if promise.state is PromiseState.PENDING:
        return [PromiseResult(promise=words, outcome=Outcome.PENDING, detail="not delivered yet")]
    if delivered is None:
        return [
            PromiseResult(
                promise=words, outcome=Outcome.MISSED, detail="not delivered by the deadline"
            )
        ]
    after = f"delivered {_minutes(delivered - incident.opened_at)} after the opening"
    kept = promise.state is PromiseState.MET
    return [
        PromiseResult(promise=words, outcome=Outcome.KEPT if kept else Outcome.MISSED, detail=after)
    ]


def _confirmed_before_each_step(
    incident: Incident, notifications: Sequence[Notification]
) -> list[PromiseResult]:
    """Each escalation step is a promise kept when a stopping role confirmed before it fell
    due: the step was then never sent."""
    agreement = EffectiveAgreement.stored(incident.agreement)
    plan = agreement.plans[EventType(incident.plan_type)]
    roles = " or ".join(role.label for role in plan.stops_escalation)
    results = []
    for level, step in enumerate(plan.steps[1:], start=1):
        rows = [
            n for n in notifications if n.kind == NotificationKind.ESCALATION and n.level == level
        ]
        timing = f"after {step.after}" if step.after else f"{step.by} before {step.before}"
        words = f"Confirmed by the {roles} before escalation step {level} ({timing})"
        sent = [n.sent_at for n in rows if n.sent_at is not None]
        if sent:
            detail = f"not confirmed before step {level} was sent to {len(sent)} contact(s)"
            results.append(PromiseResult(promise=words, outcome=Outcome.MISSED, detail=detail))
        elif incident.acknowledged_at is not None:
            confirmed = _minutes(incident.acknowledged_at - incident.opened_at)
            detail = f"confirmed {confirmed} after the opening; step {level} was not needed"
            results.append(PromiseResult(promise=words, outcome=Outcome.KEPT, detail=detail))
        elif any(n.status == NotificationStatus.SCHEDULED for n in rows):
            results.append(
                PromiseResult(promise=words, outcome=Outcome.PENDING, detail="not confirmed yet")
            )
        else:
            results.append(
                PromiseResult(
                    promise=words, outcome=Outcome.PENDING, detail="the step was not planned"
                )
            )
    return results


def _decided_in_time(
    incident: Incident, notifications: Sequence[Notification], now: datetime
) -> list[PromiseResult]:
    overdue = [n for n in notifications if n.kind == NotificationKind.DECISION_OVERDUE]
    if incident.oos_release is None or not overdue:
        return []
    deadline = min(n.due_at for n in overdue)
    words = "Decision on the offered product before its deadline"
    if incident.decided_at is not None:
        kept = incident.decided_at <= deadline
        detail = f"decided {_minutes(incident.decided_at - incident.opened_at)} after the opening"
        return [
            PromiseResult(
                promise=words, outcome=Outcome.KEPT if kept else Outcome.MISSED, detail=detail
            )
        ]
    if now <= deadline:
        return [PromiseResult(promise=words, outcome=Outcome.PENDING, detail="not decided yet")]
    return [
        PromiseResult(promise=words, outcome=Outcome.MISSED, detail="not decided by the deadline")
    ]


def _no_liaison(notifications: Sequence[Notification]) -> PromiseResult:
    reached = [
        n
        for n in notifications
        if n.kind == NotificationKind.PATIENT
        or (n.role.rpartition(":")[2] in LIAISON_ROLES and n.status != NotificationStatus.CANCELLED)
    ]
    words = "No patient liaison reached in a drill"
    if reached:
        return PromiseResult(
            promise=words, outcome=Outcome.MISSED, detail=f"{len(reached)} message(s) to liaisons"
        )
    return PromiseResult(promise=words, outcome=Outcome.KEPT, detail="none was told")


def for_incident(session: Session, incident_id: str, now: datetime) -> DrillReport:
    """The report of one drill; NotFound or Conflict when there is none."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(f"no incident {incident_id!r}")
    return report(session, incident, now)


def drills(session: Session, since: datetime, now: datetime) -> list[DrillReport]:
    """The reports of the drills opened since ``since``, newest first."""
    found = session.exec(
        select(Incident)
        .where(col(Incident.drill).is_(True), col(Incident.opened_at) >= since)
        .order_by(col(Incident.opened_at).desc())
    ).all()
    return [report(session, incident, now) for incident in found]
