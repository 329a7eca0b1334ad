"""The board: open incidents, what comes due soonest first, each with what the QA desk asks at a
glance: when lymphodepletion and the infusion are, which calls and reports to authorities are
owed, has the center been told in time, who confirmed, what fires next and when, is a decision
awaited."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from oos_notify.agreements.config import Agreements
from oos_notify.agreements.vocabulary import SEVERITY_ORDER, Disposition, KeyDate, Severity
from oos_notify.delivery.rendering import KEY_DATE_LABELS
from oos_notify.incidents.call_tasks import CallTaskStatus
from oos_notify.incidents.queries import NotifyWithin, PromiseState, breached
from oos_notify.store.lifecycle import IncidentStatus, NotificationStatus
from oos_notify.store.models import (
    Acknowledgement,
    CallTask,
    Incident,
    Notification,
    RegulatoryClock,
)
from oos_notify.web.console.fmt import role, span

OPEN_STATUSES = [s.value for s in IncidentStatus if not s.is_closed]
BOARD_LIMIT = 500
"""More open incidents than this is not a board any more; the filters narrow it down."""
BOARD_KEY_DATES = (KeyDate.LYMPHODEPLETION_START, KeyDate.PLANNED_INFUSION)
"""The dates that make an incident urgent: once lymphodepletion starts, the patient needs a
product by the infusion."""


@dataclass(frozen=True)
class Center:
    name: str
    timezone: str


def centers_of(agreements: Agreements) -> dict[str, Center]:
    """Each center's name and time zone, as configured now."""
    return {
        site.id: Center(site.name, site.timezone or system.timezone)
        for system in agreements.health_systems.values()
        for site in system.sites
    }


@dataclass(frozen=True)
class Filters:
    center_id: str | None = None
    status: IncidentStatus | None = None
    """One status; none means every open one."""
    breached: bool = False
    awaiting_decision: bool = False

    def query(self) -> str:
        """The filters as a query string, for the live refresh and for links."""
        values = {
            "center": self.center_id or "",
            "status": self.status.value if self.status else "",
            "breached": "1" if self.breached else "",
            "decision": "1" if self.awaiting_decision else "",
        }
        return urlencode({k: v for k, v in values.items() if v})


@dataclass(frozen=True)
class NextStep:
    """The next notifications due: their common due time, what they send and to whom."""

    due_at: datetime
    template: str
    roles: list[str]


@dataclass(frozen=True)
class Confirmation:
    by: str
    role: str
    at: datetime
    name: str | None = None
    """The name the confirming person's email was addressed to."""


@dataclass(frozen=True)
class KeyDay:
    """One of ``BOARD_KEY_DATES`` of an incident, and the instant its day starts at the center."""

    label: str
    day: date
    starts_at: datetime


@dataclass(frozen=True)
class Deadline:
    """Something owed by a time: an open call task or a running regulatory clock."""

    kind: str
    """``call`` or ``report``."""
    label: str
    due_at: datetime


@dataclass(frozen=True)
class Row:
    incident: Incident
    center: Center
    promise: NotifyWithin | None
    confirmed: Confirmation | None
    next_step: NextStep | None
    key_days: list[KeyDay]
    deadlines: list[Deadline]
    """Open call tasks and running clocks, soonest due first."""
    now: datetime = field(compare=False)

    @property
    def decision_awaited(self) -> bool:
        return (
            self.incident.disposition == Disposition.OOS_RELEASE_OFFERED
            and self.incident.decision is None
        )

    @property
    def closed(self) -> bool:
        return IncidentStatus(self.incident.status).is_closed

    @property
    def age(self) -> timedelta:
        return self.now - self.incident.opened_at

    @property
    def promise_text(self) -> str:
        """``met``, ``breached by 12 min``, ``23 min left``, or empty without a promise."""
        promise = self.promise
        if promise is None:
            return ""
        if promise.state is PromiseState.MET:
            return "met"
        if promise.state is PromiseState.BREACHED:
            late = (promise.first_delivered_at or self.now) - promise.deadline
            return f"breached by {span(late)}"
        return f"{span(promise.deadline - self.now)} left"

    @property
    def due_at(self) -> datetime | None:
        """What comes due soonest: a key date from today on (its day's start at the center), an
        open call task, a running regulatory clock, or the notify-within promise not met yet
        (past ones first: what is overdue is the most urgent)."""
        promise = self.promise
        due = [
            *(k.starts_at for k in self.key_days if k.day >= self.today),
            *(d.due_at for d in self.deadlines),
            *([promise.deadline] if promise and promise.first_delivered_at is None else []),
        ]
        return min(due, default=None)

    @property
    def today(self) -> date:
        """The date at the center now."""
        return self.now.astimezone(ZoneInfo(self.center.timezone)).date()

    def urgency(self) -> tuple[bool, datetime, bool, int, datetime, datetime]:
        """Sort key, soonest due first: open before closed; then by what comes due soonest;
        among those due at once, waiting on the center (no confirmation yet, or a decision
        awaited) before settled; then by severity; then by the next step; the oldest first of
        what is left."""
        waiting = self.confirmed is None or self.decision_awaited
        return (
            self.closed,
            self.due_at or _NEVER,
            not waiting,
            SEVERITY_ORDER.index(Severity(self.incident.severity)),
            self.next_step.due_at if self.next_step else _NEVER,
            self.incident.opened_at,
        )


_NEVER = datetime.max.replace(tzinfo=UTC)


def rows(
    session: Session,
    filters: Filters,
    centers: Mapping[str, Center],
    now: datetime,
) -> list[Row]:
    """The board's rows, most urgent first."""
    query = select(Incident).options(defer(Incident.agreement))  # type: ignore[arg-type]
    if filters.status is not None:
        query = query.where(Incident.status == filters.status.value)
    else:
        query = query.where(col(Incident.status).in_(OPEN_STATUSES))
    if filters.center_id:
        query = query.where(Incident.center_id == filters.center_id)
    if filters.breached:
        query = query.where(breached(now))
    if filters.awaiting_decision:
        query = query.where(
            Incident.disposition == Disposition.OOS_RELEASE_OFFERED.value,
            col(Incident.decision).is_(None),
        )
    incidents = session.exec(
        query.order_by(col(Incident.opened_at).desc()).limit(BOARD_LIMIT)
    ).all()
    ids = [i.id for i in incidents]
    confirmed = _confirmations(session, incidents)
    upcoming = _next_steps(session, ids)
    owed = _deadlines(session, ids)
    found = []
    for incident in incidents:
        center = centers.get(incident.center_id, Center(incident.center_id, "UTC"))
        found.append(
            Row(
                incident,
                center,
                NotifyWithin.of(incident, now),
                confirmed.get(incident.id),
                upcoming.get(incident.id),
                key_days(incident, center.timezone),
                owed.get(incident.id, []),
                now,
            )
        )
    return sorted(found, key=Row.urgency)


def key_days(incident: Incident, timezone: str) -> list[KeyDay]:
    """The incident's lymphodepletion and infusion dates, as far as it has them."""
    zone = ZoneInfo(timezone)
    days = []
    for key in BOARD_KEY_DATES:
        value = incident.key_dates.get(key.value)
        if value:
            day = date.fromisoformat(value)
            days.append(KeyDay(KEY_DATE_LABELS[key], day, datetime.combine(day, time(), zone)))
    return days


def _deadlines(session: Session, ids: Sequence[str]) -> dict[str, list[Deadline]]:
    calls = session.exec(
        select(CallTask)
        .where(
            col(CallTask.incident_id).in_(list(ids)),
            CallTask.status == CallTaskStatus.OPEN.value,
        )
        .order_by(col(CallTask.due_at), col(CallTask.id))
    ).all()
    clocks = session.exec(
        select(RegulatoryClock)
        .where(
            col(RegulatoryClock.incident_id).in_(list(ids)),
            col(RegulatoryClock.closed_at).is_(None),
        )
        .order_by(col(RegulatoryClock.due_at), col(RegulatoryClock.id))
    ).all()
    owed: dict[str, list[Deadline]] = {}
    for task in calls:
        label = f"Call by {role(task.caller_role)}: {task.reason}"
        owed.setdefault(task.incident_id, []).append(Deadline("call", label, task.due_at))
    for clock in clocks:
        owed.setdefault(clock.incident_id, []).append(Deadline("report", clock.label, clock.due_at))
    for deadlines in owed.values():
        deadlines.sort(key=lambda d: d.due_at)
    return owed


def _confirmations(session: Session, incidents: Sequence[Incident]) -> dict[str, Confirmation]:
    """The first answer of each incident's current round that counts for it (a cell lab's
    confirmation, which stops nothing, does not): who confirmed, and when."""
    rounds = {i.id: i.ack_round for i in incidents}
    answers = session.exec(
        select(Acknowledgement)
        .where(
            col(Acknowledgement.incident_id).in_(list(rounds)),
            col(Acknowledgement.stopped_escalation).is_not(False),
        )
        .order_by(col(Acknowledgement.at))
    ).all()
    names = dict(
        session.exec(
            select(Notification.id, Notification.recipient_name).where(
                col(Notification.id).in_([a.notification_id for a in answers])
            )
        ).all()
    )
    first: dict[str, Confirmation] = {}
    for answer in answers:
        if answer.round == rounds[answer.incident_id]:
            first.setdefault(
                answer.incident_id,
                Confirmation(
                    answer.email, answer.role, answer.at, names.get(answer.notification_id)
                ),
            )
    return first


def _next_steps(session: Session, ids: Sequence[str]) -> dict[str, NextStep]:
    scheduled = session.exec(
        select(Notification)
        .where(
            col(Notification.incident_id).in_(list(ids)),
            Notification.status == NotificationStatus.SCHEDULED.value,
        )
        .order_by(col(Notification.due_at), col(Notification.id))
    ).all()
    steps: dict[str, NextStep] = {}
    for row in scheduled:
        step = steps.get(row.incident_id)
        if step is None:
            steps[row.incident_id] = NextStep(row.due_at, row.template, [row.role])
        elif (step.due_at, step.template) == (row.due_at, row.template) and (
            row.role not in step.roles
        ):
            step.roles.append(row.role)
    return steps
