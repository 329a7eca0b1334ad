"""Call tasks: a phone call somebody of the manufacturer must make to a center.

An agreement's plan may say that an incident also needs a call (``CallRule``: by severity, by
hours to lymphodepletion, after infusion); other features open one for their own reasons (a
center asking to be called) with ``open_call_task``. A task names the manufacturer role that
calls and the numbers to call, is due within the agreement's promise, is shown first on the
console's board, and is closed by recording whom the caller reached, on which number, when, and
what came of it. One still open at its deadline is escalated by email to the next role.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlmodel import Session, col, select

from oos_notify.addresses import Name
from oos_notify.agreements import business_time
from oos_notify.agreements.business_time import CenterCalendar
from oos_notify.agreements.config import CallRule, EffectiveAgreement, Phone, Recipient
from oos_notify.agreements.durations import parse_duration
from oos_notify.agreements.vocabulary import (
    MANUFACTURER_PREFIX,
    CenterRole,
    EventType,
    KeyDate,
    ManufacturerRole,
    ProductStatus,
    Severity,
)
from oos_notify.errors import Conflict, InvalidFields, NotFound
from oos_notify.ids import new_id
from oos_notify.incidents import skipped_steps
from oos_notify.incidents.planning import plan_to_holders
from oos_notify.store import audit, outbox, timers
from oos_notify.store.instants import UtcInstant
from oos_notify.store.lifecycle import IncidentStatus, NotificationKind
from oos_notify.store.models import CallTask, CallTaskNotice, Incident
from oos_notify.store.outbox import PlannedNotification
from oos_notify.store.timers import TimerKind
from oos_notify.texts import storable

CALL_TASK_TEMPLATE = "call_task"
CALL_TASK_OVERDUE_TEMPLATE = "call_task_overdue"
DEFAULT_CALL_WITHIN = parse_duration("1h")
"""How long a caller has when neither the rule nor the agreement's promise says."""
DEFAULT_CALLER = Recipient(ManufacturerRole.QA.value, manufacturer=True)
"""Who calls for a task opened without a rule, when the incident's plan has no call rule."""


class CallTaskStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


# --- pure: which calls an incident needs, whom to call, by when --------------------------------


@dataclass(frozen=True)
class CallNeed:
    """A call rule that applies to an incident now, and why."""

    rule: CallRule
    reason: str


def needed_calls(
    rules: Sequence[CallRule],
    severity: Severity,
    key_dates: Mapping[KeyDate, date],
    infused: bool,
    calendar: CenterCalendar,
    now: datetime,
) -> list[CallNeed]:
    """The rules whose conditions hold for an incident at ``now`` (any one condition is enough)."""
    needs = []
    for rule in rules:
        reasons = []
        if severity in rule.severity:
            reasons.append(f"the incident is {severity}")
        start = key_dates.get(KeyDate.LYMPHODEPLETION_START)
        within = rule.lymphodepletion_within
        if within is not None and start is not None:
            starts_at = calendar.start_of(start)
            if starts_at <= now:
                reasons.append("lymphodepletion has started")
            elif starts_at <= business_time.add(now, within, calendar, business_hours=False):
                reasons.append(f"lymphodepletion starts within {within}")
        if rule.after_infusion and infused:
            reasons.append("the product was infused")
        if reasons:
            needs.append(CallNeed(rule, "; ".join(reasons)))
    return needs


def call_thresholds(
    rules: Sequence[CallRule], key_dates: Mapping[KeyDate, date], calendar: CenterCalendar
) -> list[datetime]:
    """The instants at which a rule's ``lymphodepletion_within`` starts to hold."""
    start = key_dates.get(KeyDate.LYMPHODEPLETION_START)
    if start is None:
        return []
    return [
        business_time.subtract(
            calendar.start_of(start), rule.lymphodepletion_within, calendar, business_hours=False
        )
        for rule in rules
        if rule.lymphodepletion_within is not None
    ]


def numbers_to_call(
    agreement: EffectiveAgreement, reach: Sequence[CenterRole]
) -> list[dict[str, Any]]:
    """Whom a caller rings, in order: the center's round-the-clock line, then each person of the
    ``reach`` roles who has a number (the site's people first, else the system's)."""
    numbers: list[dict[str, Any]] = []
    if agreement.on_call_phone:
        numbers.append(
            {
                "name": f"{agreement.center_name} on-call line",
                "role": None,
                "phone": agreement.on_call_phone,
            }
        )
    seen = {n["phone"] for n in numbers}
    for role in reach:
        for contact in agreement.contacts_for(Recipient(role.value, manufacturer=False)):
            if contact.phone and contact.phone not in seen:
                seen.add(contact.phone)
                numbers.append({"name": contact.name, "role": role.value, "phone": contact.phone})
    return numbers


def call_due(
    agreement: EffectiveAgreement, rule: CallRule | None, severity: Severity, now: datetime
) -> datetime:
    """The deadline of a call opened now: the rule's ``within``, else the agreement's promise for
    the severity (``notify_within``), else an hour."""
    within = (
        (rule.within if rule is not None else None)
        or agreement.notify_within.get(severity)
        or DEFAULT_CALL_WITHIN
    )
    return business_time.add(now, within, CenterCalendar.of(agreement), business_hours=False)


# --- opening, closing, escalating -----------------------------------------------------------


def open_call_task(
    session: Session,
    incident: Incident,
    now: datetime,
    mail_domain: str,
    *,
    reason: str,
    rule: str = "request",
    caller: Recipient | None = None,
    escalate: Sequence[Recipient] | None = None,
    numbers: Sequence[Mapping[str, Any]] | None = None,
    due_at: datetime | None = None,
    actor: str = "system",
) -> CallTask:
    """Open a call task on ``incident``: the caller's role is emailed at once with the numbers
    to call, and the task escalates at ``due_at`` if it is still open. What is not given comes
    from the incident's plan (its first call rule's caller and escalation, else QA) and its
    agreement (the numbers of the physician and coordinator, the promise for its severity)."""
    task, _ = _open_task(
        session,
        incident,
        now,
        mail_domain,
        reason=reason,
        rule=rule,
        caller=caller,
        escalate=escalate,
        numbers=numbers,
        due_at=due_at,
        actor=actor,
    )
    return task


def _open_task(
    session: Session,
    incident: Incident,
    now: datetime,
    mail_domain: str,
    *,
    reason: str,
    rule: str,
    caller: Recipient | None,
    escalate: Sequence[Recipient] | None,
    numbers: Sequence[Mapping[str, Any]] | None,
    due_at: datetime | None,
    actor: str,
) -> tuple[CallTask, list[tuple[str, PlannedNotification]]]:
    agreement = EffectiveAgreement.stored(incident.agreement)
    plan_rules = agreement.plans[EventType(incident.plan_type)].calls
    template = plan_rules[0] if plan_rules else None
    caller = caller or (template.call if template else DEFAULT_CALLER)
    escalate = list(escalate or (template.escalate if template else [DEFAULT_CALLER]))
    reach = template.reach if template else [CenterRole.PHYSICIAN, CenterRole.COORDINATOR]
    task = CallTask(
        id=new_id("call"),
        incident_id=incident.id,
        rule=rule,
        reason=reason,
        round=incident.ack_round,
        caller_role=str(caller),
        escalate=[str(r) for r in escalate],
        numbers=[
            dict(n) for n in (numbers if numbers is not None else numbers_to_call(agreement, reach))
        ],
        status=CallTaskStatus.OPEN.value,
        opened_at=now,
        due_at=due_at or call_due(agreement, None, Severity(incident.severity), now),
    )
    session.add(task)
    session.flush()
    audit.record(
        session,
        now,
        "call_task_opened",
        actor,
        incident_id=incident.id,
        call_task_id=task.id,
        rule=rule,
        reason=reason,
        caller=task.caller_role,
        due_at=task.due_at.isoformat(),
        numbers=[n["phone"] for n in task.numbers],
    )
    told = _tell(
        session, incident, agreement, task, [caller], NotificationKind.CALL_TASK, now, mail_domain
    )
    timers.schedule(session, incident.id, TimerKind.CALL_TASK_DUE, task.due_at, now, task.id)
    return task, told


def apply_call_rules(
    session: Session, incident: Incident, now: datetime, mail_domain: str
) -> list[tuple[str, PlannedNotification]]:
    """Open a task for each call rule of the incident's plan that holds now and has not opened
    one in the current round (a late result starts a new round, which needs its own call).
    Returns the messages that tell the callers."""
    if IncidentStatus(incident.status).is_closed:
        return []
    agreement = EffectiveAgreement.stored(incident.agreement)
    rules = agreement.plans[EventType(incident.plan_type)].calls
    if not rules:
        return []
    needs = needed_calls(
        rules,
        Severity(incident.severity),
        {KeyDate(k): date.fromisoformat(v) for k, v in incident.key_dates.items()},
        incident.product_status == ProductStatus.INFUSED,
        CenterCalendar.of(agreement),
        now,
    )
    opened_before = set(
        session.exec(
            select(CallTask.rule).where(
                col(CallTask.incident_id) == incident.id, col(CallTask.round) == incident.ack_round
            )
        ).all()
    )
    told: list[tuple[str, PlannedNotification]] = []
    for need in needs:
        if need.rule.name in opened_before:
            continue
        _, messages = _open_task(
            session,
            incident,
            now,
            mail_domain,
            reason=need.reason,
            rule=need.rule.name,
            caller=need.rule.call,
            escalate=need.rule.escalate,
            numbers=numbers_to_call(agreement, need.rule.reach),
            due_at=call_due(agreement, need.rule, Severity(incident.severity), now),
            actor="planner",
        )
        told += messages
    return told


def escalate_if_open(session: Session, task_id: str, now: datetime, mail_domain: str) -> bool:
    """A call task's deadline: still open, its rule's escalation roles are told by email.
    Returns whether it was escalated."""
    task = session.get(CallTask, task_id)
    if task is None or task.status != CallTaskStatus.OPEN or task.escalated_at is not None:
        return False
    incident = session.get(Incident, task.incident_id)
    assert incident is not None
    agreement = EffectiveAgreement.stored(incident.agreement)
    task.escalated_at = now
    session.add(task)
    audit.record(
        session,
        now,
        "call_task_escalated",
        "system",
        incident_id=incident.id,
        call_task_id=task.id,
        due_at=task.due_at.isoformat(),
        escalate=task.escalate,
    )
    recipients = [_recipient(r) for r in task.escalate]
    _tell(
        session,
        incident,
        agreement,
        task,
        recipients,
        NotificationKind.CALL_TASK_OVERDUE,
        now,
        mail_domain,
    )
    return True


class CallTaskClose(BaseModel):
    """What the caller records when the call is made: all four are needed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reached_name: Name
    """Who the caller spoke to at the center."""
    reached_number: Phone
    """The number the caller reached them on."""
    reached_at: UtcInstant
    """When they spoke."""
    outcome: Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(storable)]
    """What was said and agreed."""
    closed_by: Name
    """Who made the call (a console user's address, or a name from the API)."""


class CallNumber(BaseModel):
    name: str
    role: str | None = None
    phone: str


class CallTaskOut(BaseModel):
    id: str
    incident_id: str
    incident_ref: str
    center_id: str
    rule: str
    reason: str
    caller_role: str
    escalate: list[str]
    numbers: list[CallNumber]
    status: CallTaskStatus
    opened_at: datetime
    due_at: datetime
    overdue: bool
    escalated_at: datetime | None
    closed_at: datetime | None
    closed_by: str | None
    reached_name: str | None
    reached_number: str | None
    reached_at: datetime | None
    outcome: str | None


def close_call_task(
    session: Session, task_id: str, record: CallTaskClose, now: datetime
) -> CallTaskOut:
    """Record the call that closes a task: 404 for an unknown task, 409 for one already
    closed, 422 for a call said to have happened in the future or before the task opened."""
    task = session.get(CallTask, task_id)
    if task is None:
        raise NotFound(f"no call task {task_id!r}")
    if task.status == CallTaskStatus.CLOSED:
        raise Conflict(
            f"call task {task_id!r} is already closed (by {task.closed_by}): "
            "a second call goes on the incident's timeline, not on this task"
        )
    if record.reached_at > now:
        raise InvalidFields([("reached_at", "is in the future", "invalid")])
    if record.reached_at < task.opened_at:
        raise InvalidFields(
            [
                (
                    "reached_at",
                    "is before the call task was opened: record the call it asked for",
                    "invalid",
                )
            ]
        )
    task.status = CallTaskStatus.CLOSED.value
    task.closed_at = now
    task.closed_by = record.closed_by
    task.reached_name = record.reached_name
    task.reached_number = record.reached_number
    task.reached_at = record.reached_at
    task.outcome = record.outcome
    session.add(task)
    timers.cancel(session, task.incident_id, TimerKind.CALL_TASK_DUE, task.id)
    audit.record(
        session,
        now,
        "call_task_closed",
        record.closed_by,
        incident_id=task.incident_id,
        call_task_id=task.id,
        reached_name=record.reached_name,
        reached_number=record.reached_number,
        reached_at=record.reached_at.isoformat(),
        outcome=record.outcome,
        late=now > task.due_at,
    )
    session.flush()
    incident = session.get(Incident, task.incident_id)
    assert incident is not None
    return _out(task, incident, now)


def list_call_tasks(
    session: Session,
    now: datetime,
    status: CallTaskStatus | None = None,
    incident_id: str | None = None,
    limit: int = 200,
    call_task_id: str | None = None,
) -> list[CallTaskOut]:
    """Call tasks, open ones first, each group by its deadline (the most urgent first)."""
    query = select(CallTask, Incident).join(Incident, col(Incident.id) == col(CallTask.incident_id))
    if call_task_id is not None:
        query = query.where(col(CallTask.id) == call_task_id)
    if status is not None:
        query = query.where(col(CallTask.status) == status.value)
    if incident_id is not None:
        query = query.where(col(CallTask.incident_id) == incident_id)
    rows = session.exec(
        query.order_by(col(CallTask.status).desc(), col(CallTask.due_at), col(CallTask.id)).limit(
            limit
        )
    ).all()
    return [_out(task, incident, now) for task, incident in rows]


def call_task_for(session: Session, notification_id: str) -> CallTask | None:
    """The call task a message is about."""
    link = session.get(CallTaskNotice, notification_id)
    return session.get(CallTask, link.call_task_id) if link else None


def _out(task: CallTask, incident: Incident, now: datetime) -> CallTaskOut:
    return CallTaskOut(
        id=task.id,
        incident_id=incident.id,
        incident_ref=incident.incident_ref,
        center_id=incident.center_id,
        rule=task.rule,
        reason=task.reason,
        caller_role=task.caller_role,
        escalate=task.escalate,
        numbers=[CallNumber(**n) for n in task.numbers],
        status=CallTaskStatus(task.status),
        opened_at=task.opened_at,
        due_at=task.due_at,
        overdue=task.status == CallTaskStatus.OPEN and now >= task.due_at,
        escalated_at=task.escalated_at,
        closed_at=task.closed_at,
        closed_by=task.closed_by,
        reached_name=task.reached_name,
        reached_number=task.reached_number,
        reached_at=task.reached_at,
        outcome=task.outcome,
    )


def _recipient(value: str) -> Recipient:
    if value.startswith(MANUFACTURER_PREFIX):
        return Recipient(value.removeprefix(MANUFACTURER_PREFIX), manufacturer=True)
    return Recipient(value, manufacturer=False)


def _tell(
    session: Session,
    incident: Incident,
    agreement: EffectiveAgreement,
    task: CallTask,
    recipients: Sequence[Recipient],
    kind: NotificationKind,
    now: datetime,
    mail_domain: str,
) -> list[tuple[str, PlannedNotification]]:
    """Email everyone who holds ``recipients`` about the task, at once; a role nobody holds is
    a gap the audit trail shows. Returns what was scheduled."""
    template = (
        CALL_TASK_TEMPLATE if kind is NotificationKind.CALL_TASK else CALL_TASK_OVERDUE_TEMPLATE
    )
    planned = plan_to_holders(agreement, recipients, kind, template, now)
    skipped_steps.record(session, incident.id, planned.skipped, now)
    scheduled = outbox.schedule(session, incident.id, planned.notifications, now, mail_domain)
    for notification_id, _ in scheduled:
        session.add(CallTaskNotice(notification_id=notification_id, call_task_id=task.id))
    return scheduled
