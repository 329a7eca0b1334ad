"""Regulatory clocks: reports owed to an authority by a set time after a transition of the
incident (the EU's 48 h notification after an out-of-specification batch is administered, a
biological product deviation report within 45 days of discovery).

A clock starts once per incident when its transition is reached; regulatory affairs is reminded
``remind_before`` its due time and, with the clock's escalation roles, told when it runs out;
QA closes it by posting the report's reference, which cancels what is still waiting. Resolving
the incident does not stop a clock: the report is owed whether the incident is open or not.

Planning (``applicable``, ``plan_notices``) is pure; ``start`` and ``close`` write.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func
from sqlmodel import Session, col, select

from oos_notify.addresses import Address, Name
from oos_notify.agreements.config import EffectiveAgreement, OosPathway, RegulatoryClock
from oos_notify.agreements.vocabulary import ProductStatus, Transition, transitions_reached
from oos_notify.errors import Conflict, NotFound
from oos_notify.ids import new_id
from oos_notify.incidents import pathway_gates
from oos_notify.store import audit, outbox
from oos_notify.store.lifecycle import Condition, IncidentStatus, NotificationKind
from oos_notify.store.models import Event, Incident, Notification, RegulatoryClockNotice
from oos_notify.store.models import RegulatoryClock as ClockRow
from oos_notify.store.outbox import PlannedNotification

REMINDER_TEMPLATE = "regulatory_clock_reminder"
MISSED_TEMPLATE = "regulatory_clock_missed"
REMINDER, MISSED = 0, 1
"""The levels of a clock's notices: the reminder before it is due, the escalation after."""


@dataclass(frozen=True)
class Started:
    """A clock to start: its definition and the instant it counts from."""

    clock: RegulatoryClock
    started_at: datetime


def applicable(
    agreement: EffectiveAgreement, offer: dict[str, Any] | None, offer_in_force: bool
) -> list[RegulatoryClock]:
    """The clocks an incident may start: the manufacturer's for every incident at a center
    under their jurisdiction, and its pathway's while the product offered under it goes ahead."""
    center = agreement.oos_pathway.id if agreement.oos_pathway else None
    clocks = [
        clock
        for clock in agreement.regulatory_clocks
        if clock.pathways is None or center in clock.pathways
    ]
    if offer is not None and offer_in_force:
        clocks += OosPathway.model_validate(offer["definition"]).clocks
    return clocks


def reached(status: ProductStatus | None, resolved: bool) -> set[Transition]:
    """Every transition an incident has reached: it opened, and its product's states."""
    found = {Transition.OPENED, *transitions_reached(status)}
    if resolved:
        found.add(Transition.RESOLVED)
    return found


def to_start(
    clocks: Sequence[RegulatoryClock],
    transitions: Collection[Transition],
    started: Collection[str],
    *,
    discovered_at: datetime,
    infused_at: datetime | None,
    occurred_at: datetime,
) -> list[Started]:
    """The clocks whose transition is reached and that have not started yet, each with the
    instant it counts from: discovery, the infusion, or the event that recorded the step."""
    found = []
    for clock in clocks:
        if clock.started_by not in transitions or clock.id in started:
            continue
        if clock.counted_from == "discovery":
            at = discovered_at
        elif clock.started_by is Transition.INFUSED and infused_at is not None:
            at = infused_at
        elif clock.started_by is Transition.OPENED:
            at = discovered_at
        else:
            at = occurred_at
        found.append(Started(clock, at))
    return found


def plan_notices(
    agreement: EffectiveAgreement, clock: RegulatoryClock, due_at: datetime, now: datetime
) -> list[PlannedNotification]:
    """The owner's reminder ``remind_before`` the due time, and at the due time the owner and
    the escalation roles: a time already past means now."""
    steps = [(MISSED, MISSED_TEMPLATE, due_at, [clock.owner, *clock.escalate])]
    if clock.remind_before is not None:
        reminder_at = due_at - clock.remind_before.as_timedelta()
        steps.insert(0, (REMINDER, REMINDER_TEMPLATE, reminder_at, [clock.owner]))
    planned = []
    for level, template, at, recipients in steps:
        seen: set[str] = set()
        for recipient in recipients:
            for contact in agreement.contacts_for(recipient):
                if contact.email.lower() in seen:
                    continue
                seen.add(contact.email.lower())
                planned.append(
                    PlannedNotification(
                        kind=NotificationKind.REGULATORY_CLOCK,
                        level=level,
                        role=str(recipient),
                        contact_id=contact.id,
                        recipient_name=contact.name,
                        recipient_email=contact.email,
                        template=template,
                        due_at=max(at, now),
                        condition=Condition.CLOCK_OPEN,
                        with_ack_link=False,
                    )
                )
    return planned


# --- writing -----------------------------------------------------------------------------------


def start(
    session: Session,
    incident: Incident,
    agreement: EffectiveAgreement,
    occurred_at: datetime,
    now: datetime,
    mail_domain: str,
) -> list[tuple[str, PlannedNotification]]:
    """Start every clock the incident's state now calls for and schedule its notices; return
    what was scheduled."""
    offer = incident.oos_release
    in_force = pathway_gates.applies(offer, incident.disposition, incident.decision)
    clocks = applicable(agreement, offer, in_force)
    if not clocks:
        return []
    status = ProductStatus(incident.product_status) if incident.product_status else None
    transitions = reached(status, resolved=incident.status == IncidentStatus.RESOLVED)
    clocks = [clock for clock in clocks if clock.started_by in transitions]
    if not clocks:
        return []
    started = set(
        session.exec(select(ClockRow.clock_id).where(ClockRow.incident_id == incident.id)).all()
    )
    discovered = session.exec(
        select(func.min(Event.occurred_at)).where(Event.incident_id == incident.id)
    ).one()
    scheduled: list[tuple[str, PlannedNotification]] = []
    for starting in to_start(
        clocks,
        transitions,
        started,
        discovered_at=discovered or occurred_at,
        infused_at=incident.infused_at,
        occurred_at=occurred_at,
    ):
        scheduled += _start_one(session, incident, agreement, starting, now, mail_domain)
    return scheduled


def _start_one(
    session: Session,
    incident: Incident,
    agreement: EffectiveAgreement,
    starting: Started,
    now: datetime,
    mail_domain: str,
) -> list[tuple[str, PlannedNotification]]:
    clock = starting.clock
    due_at = starting.started_at + clock.within.as_timedelta()
    row = ClockRow(
        id=new_id("clk"),
        incident_id=incident.id,
        clock_id=clock.id,
        label=clock.label,
        source=clock.source,
        owner=str(clock.owner),
        started_by=clock.started_by.value,
        started_at=starting.started_at,
        due_at=due_at,
        created_at=now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        now,
        "regulatory_clock_started",
        "planner",
        incident_id=incident.id,
        clock=clock.id,
        started_by=clock.started_by.value,
        started_at=starting.started_at.isoformat(),
        due_at=due_at.isoformat(),
        source=clock.source,
    )
    scheduled = outbox.schedule(
        session, incident.id, plan_notices(agreement, clock, due_at, now), now, mail_domain
    )
    for notification_id, _ in scheduled:
        session.add(RegulatoryClockNotice(notification_id=notification_id, clock_row_id=row.id))
    return scheduled


class ClockReportIn(BaseModel):
    """QA's word that the report a clock waits for was made, and where it is filed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    report_reference: Annotated[
        str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    ]
    reported_by: Annotated[Name, Field(description="The printed name of who posts it")]
    email: Address


class ClockOut(BaseModel):
    """A regulatory clock as the API shows it."""

    clock_id: str
    label: str
    source: str
    owner: str
    started_by: str
    started_at: datetime
    due_at: datetime
    state: str
    """``running``, ``overdue`` (its due time reached without a report) or ``closed``."""
    report_reference: str | None
    closed_at: datetime | None
    closed_by: str | None

    @classmethod
    def of(cls, row: ClockRow, now: datetime) -> ClockOut:
        state = "closed" if row.closed_at else "overdue" if now >= row.due_at else "running"
        return cls(
            clock_id=row.clock_id,
            label=row.label,
            source=row.source,
            owner=row.owner,
            started_by=row.started_by,
            started_at=row.started_at,
            due_at=row.due_at,
            state=state,
            report_reference=row.report_reference,
            closed_at=row.closed_at,
            closed_by=row.closed_by,
        )


def of_incident(session: Session, incident_id: str, now: datetime) -> list[ClockOut]:
    """The incident's clocks, soonest due first."""
    rows = session.exec(
        select(ClockRow)
        .where(ClockRow.incident_id == incident_id)
        .order_by(col(ClockRow.due_at), col(ClockRow.clock_id))
    ).all()
    return [ClockOut.of(row, now) for row in rows]


def close(
    session: Session, incident_id: str, clock_id: str, report: ClockReportIn, now: datetime
) -> ClockOut:
    """Close the clock with the report's reference and cancel its waiting notices. Posting the
    same reference again changes nothing; a different one for a closed clock is refused."""
    if session.get(Incident, incident_id) is None:
        raise NotFound(f"no incident {incident_id!r}")
    row = session.exec(
        select(ClockRow).where(ClockRow.incident_id == incident_id, ClockRow.clock_id == clock_id)
    ).first()
    if row is None:
        started = [c.clock_id for c in of_incident(session, incident_id, now)]
        raise NotFound(
            f"incident {incident_id!r} has no clock {clock_id!r} running; "
            f"its clocks: {', '.join(started) or 'none yet'}"
        )
    if row.closed_at is not None:
        if row.report_reference == report.report_reference:
            return ClockOut.of(row, now)
        raise Conflict(
            f"clock {clock_id!r} was closed with report {row.report_reference!r}; "
            "a closed clock keeps its reference"
        )
    row.report_reference = report.report_reference
    row.closed_at = now
    row.closed_by = report.email
    session.add(row)
    notices = select(RegulatoryClockNotice.notification_id).where(
        RegulatoryClockNotice.clock_row_id == row.id
    )
    outbox.cancel_pending(
        session,
        incident_id,
        now,
        f"the {clock_id} report was filed",
        col(Notification.id).in_(notices),
    )
    audit.record(
        session,
        now,
        "regulatory_clock_closed",
        report.email,
        incident_id=incident_id,
        clock=clock_id,
        report_reference=report.report_reference,
        reported_by=report.reported_by,
        due_at=row.due_at.isoformat(),
        on_time=now < row.due_at,
    )
    session.flush()
    return ClockOut.of(row, now)


def for_notice(session: Session, notification_id: str) -> ClockRow | None:
    """The clock a reminder or escalation is about."""
    link = session.get(RegulatoryClockNotice, notification_id)
    return session.get(ClockRow, link.clock_row_id) if link else None
