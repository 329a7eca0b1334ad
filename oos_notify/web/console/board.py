"""The board: open incidents, most urgent first, each with what the QA desk asks at a glance:
has the center been told in time, who confirmed, what fires next and when, is a decision awaited."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from oos_notify.agreements.config import Agreements
from oos_notify.agreements.vocabulary import SEVERITY_ORDER, Disposition, Severity
from oos_notify.incidents.queries import NotifyWithin, PromiseState, breached
from oos_notify.store.lifecycle import IncidentStatus, NotificationStatus
from oos_notify.store.models import Acknowledgement, Incident, Notification
from oos_notify.web.console.fmt import span

OPEN_STATUSES = [s.value for s in IncidentStatus if not s.is_closed]
BOARD_LIMIT = 500
"""More open incidents than this is not a board any more; the filters narrow it down."""


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
class Row:
    incident: Incident
    center: Center
    promise: NotifyWithin | None
    confirmed: Confirmation | None
    next_step: NextStep | None
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

    def urgency(self) -> tuple[bool, bool, int, bool, datetime, datetime]:
        """Sort key, most urgent first: open before closed; waiting on the center (no
        confirmation yet, or a decision awaited) before settled; then by severity; a broken
        promise first; then whatever comes due soonest (the promise's deadline or the next
        step); the oldest first of what is left."""
        promise = self.promise
        waiting = self.confirmed is None or self.decision_awaited
        broken = promise is not None and promise.state is PromiseState.BREACHED
        due = [
            promise.deadline if promise and promise.state is PromiseState.PENDING else None,
            self.next_step.due_at if self.next_step else None,
        ]
        return (
            self.closed,
            not waiting,
            SEVERITY_ORDER.index(Severity(self.incident.severity)),
            not broken,
            min((d for d in due if d is not None), default=_NEVER),
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
    found = [
        Row(
            incident,
            centers.get(incident.center_id, Center(incident.center_id, "UTC")),
            NotifyWithin.of(incident, now),
            confirmed.get(incident.id),
            upcoming.get(incident.id),
            now,
        )
        for incident in incidents
    ]
    return sorted(found, key=Row.urgency)


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
