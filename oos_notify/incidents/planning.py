"""What to send to whom and when: pure functions from an incident and its agreement."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from oos_notify.agreements import business_time
from oos_notify.agreements.business_time import CenterCalendar
from oos_notify.agreements.config import (
    DecisionRule,
    EffectiveAgreement,
    PatientStep,
    Plan,
    Recipient,
    SeverityRule,
    Step,
    Timing,
)
from oos_notify.agreements.vocabulary import (
    BACKUP_ROLES,
    MANUFACTURER_PREFIX,
    EventType,
    KeyDate,
    ManufacturerRole,
    Severity,
)
from oos_notify.store.lifecycle import Condition, NotificationKind
from oos_notify.store.outbox import Addressee, PlannedNotification

DELIVERY_FAILURE_TEMPLATE = "delivery_failure"


FOLLOW_UP_TEMPLATES: dict[EventType, str] = {
    EventType.UPDATE: "incident_update",
    EventType.LATE_RESULT: "late_result_notice",
    EventType.DISPOSITION: "disposition_notice",
    EventType.RESOLVED: "incident_resolved",
    EventType.WITHDRAWN: "incident_withdrawn",
}
"""The default message that tells everyone already told about each follow-up event."""

DECISION_TEMPLATE = "oos_release_decision"
DECISION_OVERDUE_TEMPLATE = "decision_overdue"
DECISION_REMINDER_TEMPLATE = "decision_reminder"


@dataclass(frozen=True)
class IncidentFacts:
    """What planning needs to know about an incident."""

    event_type: EventType
    severity: Severity
    key_dates: Mapping[KeyDate, date]


@dataclass(frozen=True)
class SkippedStep:
    """A step that could not be planned, and why: kept so that the gap is visible, not silent."""

    kind: NotificationKind
    level: int
    reason: str


@dataclass(frozen=True)
class PlanResult:
    notifications: list[PlannedNotification]
    skipped: list[SkippedStep]


def derive_severity(
    rules: Sequence[SeverityRule],
    event_type: EventType,
    failed_attributes: Iterable[str],
    key_dates: Mapping[KeyDate, date],
    calendar: CenterCalendar,
    now: datetime,
) -> tuple[Severity, str]:
    """The severity of an event that came without one, and the name of the rule that chose it."""
    attributes = {a.strip().lower() for a in failed_attributes}
    for rule in rules:
        if rule.event_type and event_type not in rule.event_type:
            continue
        if rule.failed_attribute and not attributes & {a.lower() for a in rule.failed_attribute}:
            continue
        if rule.key_date_within and not any(
            key in key_dates
            and calendar.start_of(key_dates[key])
            <= business_time.add(now, within, calendar, business_hours=False)
            for key, within in rule.key_date_within.items()
        ):
            continue
        return rule.severity, rule.name
    return Severity.MAJOR, "no severity rule matched: major"


def plan_for(agreement: EffectiveAgreement, event_type: EventType) -> Plan:
    """The escalation plan an opening event runs under at this center."""
    return agreement.plans[event_type]


def plan_opening(
    agreement: EffectiveAgreement, facts: IncidentFacts, opened_at: datetime
) -> PlanResult:
    """The notifications an incident schedules when it opens (or when a late result re-opens
    its escalation under the urgent plan)."""
    plan = plan_for(agreement, facts.event_type)
    return _plan_steps(agreement, plan, facts, opened_at, _unacknowledged_steps(plan))


def plan_acknowledged(
    agreement: EffectiveAgreement, facts: IncidentFacts, acknowledged_at: datetime
) -> PlanResult:
    """The notifications an acknowledgement starts (the ``when: acknowledged`` steps)."""
    plan = plan_for(agreement, facts.event_type)
    return _plan_steps(agreement, plan, facts, acknowledged_at, _acknowledged_steps(plan))


def plan_key_date_steps(
    agreement: EffectiveAgreement,
    facts: IncidentFacts,
    moved: Collection[KeyDate],
    acknowledged: bool,
    sent: Collection[tuple[NotificationKind, int]],
    now: datetime,
) -> PlanResult:
    """The steps due before key dates that have just moved (or appeared), planned anew.

    Only the steps the incident's state still calls for are planned (those waiting for an
    acknowledgement before it, the ``when: acknowledged`` ones after it), and a step already
    sent is not sent again: its recipients hear of the move through the update notice.
    """
    plan = plan_for(agreement, facts.event_type)
    steps = _acknowledged_steps(plan) if acknowledged else _unacknowledged_steps(plan)
    steps = [
        (kind, level, step, condition)
        for kind, level, step, condition in steps
        if step.before in moved and (kind, level) not in sent
    ]
    return _plan_steps(agreement, plan, facts, now, steps)


def plan_round_again(
    agreement: EffectiveAgreement,
    facts: IncidentFacts,
    started_at: datetime,
    sent: Collection[tuple[NotificationKind, int]],
    now: datetime,
) -> PlanResult:
    """The round's steps not yet sent, planned again from the round's start with the facts as
    they are now: when the severity rises, a critical incident's steps count every hour, so a
    reminder waiting for Monday morning is due this evening (or at once, if that is past)."""
    plan = plan_for(agreement, facts.event_type)
    steps = [step for step in _unacknowledged_steps(plan) if (step[0], step[1]) not in sent]
    return _plan_steps(agreement, plan, facts, started_at, steps, not_before=now)


def plan_follow_up(
    event_type: EventType,
    told: Sequence[Addressee],
    now: datetime,
    *,
    told_otherwise: Collection[str] = (),
) -> list[PlannedNotification]:
    """Tell everyone already told about a follow-up event, at once, but those whose email is in
    ``told_otherwise`` (they get a message of their own about it, such as a decision request)."""
    skip = {email.lower() for email in told_otherwise}
    return [
        _notice(NotificationKind.FOLLOW_UP, person, FOLLOW_UP_TEMPLATES[event_type], now)
        for person in _distinct(told)
        if person.email.lower() not in skip
    ]


def deciders(agreement: EffectiveAgreement, rule: DecisionRule) -> list[Addressee]:
    """The individuals asked to decide on an offered product, each under the role asked."""
    people = []
    for contact in agreement.deciders(rule.ask):
        role = next(r for r in rule.ask if r in contact.roles)
        people.append(Addressee(contact.id, role, contact.name, contact.email))
    return people


def plan_decision_request(
    agreement: EffectiveAgreement,
    rule: DecisionRule,
    asked: Sequence[Addressee],
    facts: IncidentFacts,
    now: datetime,
) -> PlanResult:
    """An out-of-specification product is offered: each decider is asked with a link of their
    own, the plan's ``decision.inform`` roles hear of the offer, and the deadline's escalation is
    planned. Nobody but the deciders is asked: a decision belongs to one person."""
    notices = [
        _notice(NotificationKind.DECISION, person, DECISION_TEMPLATE, now, with_ack_link=True)
        for person in _distinct(asked)
    ]
    informed, skipped = _holders(agreement, rule.inform, NotificationKind.FOLLOW_UP)
    asking = {person.email.lower() for person in asked}
    notices += plan_follow_up(EventType.DISPOSITION, informed, now, told_otherwise=asking)
    overdue = plan_decision_overdue(agreement, rule, asked, facts, now)
    reminders = plan_decision_reminders(agreement, rule, asked, facts, now)
    return PlanResult(
        [*notices, *overdue.notifications, *reminders.notifications],
        [*skipped, *overdue.skipped, *reminders.skipped],
    )


def plan_decision_reminders(
    agreement: EffectiveAgreement,
    rule: DecisionRule,
    asked: Sequence[Addressee],
    facts: IncidentFacts,
    now: datetime,
    *,
    only_before: Collection[KeyDate] | None = None,
    sent: Collection[tuple[NotificationKind, int]] = (),
) -> PlanResult:
    """The deciders' reminders at the times ``decision.reminders`` lists, each with their link;
    a decision cancels them. A reminder whose time is already past, or not before the deadline
    (whose own message asks again), is skipped and says so. With ``only_before``, just those
    due before the key dates that moved, and none already sent."""
    if rule.due is None or not rule.reminders:
        return PlanResult([], [])
    plan = plan_for(agreement, facts.event_type)
    calendar = CenterCalendar.of(agreement)
    business_hours = _business_hours_apply(plan, facts)
    deadline = _due_at(rule.due, facts, calendar, now, business_hours)
    planned: list[PlannedNotification] = []
    skipped: list[SkippedStep] = []
    for level, timing in enumerate(rule.reminders, start=1):
        if only_before is not None and timing.before not in only_before:
            continue
        if (NotificationKind.DECISION, level) in sent:
            continue
        due_at = _due_at(timing, facts, calendar, now, business_hours)
        reason = None
        if due_at is None:
            reason = f"the incident has no key date {timing.before}: no decision reminder"
        elif due_at <= now:
            reason = "the decision reminder's time had passed when the product was offered"
        elif deadline is not None and due_at >= deadline:
            reason = "the decision reminder is not before the decision deadline"
        if reason is not None or due_at is None:
            skipped.append(SkippedStep(NotificationKind.DECISION, level, reason or ""))
            continue
        planned += [
            _notice(
                NotificationKind.DECISION,
                person,
                DECISION_REMINDER_TEMPLATE,
                due_at,
                level=level,
                condition=Condition.UNDECIDED,
                with_ack_link=True,
                anchor=timing.before,
            )
            for person in _distinct(asked)
        ]
    return PlanResult(planned, skipped)


def plan_decision_overdue(
    agreement: EffectiveAgreement,
    rule: DecisionRule,
    asked: Sequence[Addressee],
    facts: IncidentFacts,
    now: datetime,
) -> PlanResult:
    """What happens when the decision is still missing at ``decision.due``: the deciders get
    their link again and the ``decision.escalate`` roles are told. A decision cancels both."""
    if rule.due is None:
        return PlanResult([], [])
    plan = plan_for(agreement, facts.event_type)
    calendar = CenterCalendar.of(agreement)
    due_at = _due_at(rule.due, facts, calendar, now, _business_hours_apply(plan, facts))
    if due_at is None:
        reason = f"the incident has no key date {rule.due.before}: no decision deadline"
        return PlanResult([], [SkippedStep(NotificationKind.DECISION_OVERDUE, 0, reason)])
    escalated, skipped = _holders(agreement, rule.escalate, NotificationKind.DECISION_OVERDUE)
    linked = {person.email.lower() for person in asked}
    planned = [
        _notice(
            NotificationKind.DECISION_OVERDUE,
            person,
            DECISION_OVERDUE_TEMPLATE,
            due_at,
            condition=Condition.UNDECIDED,
            with_ack_link=person.email.lower() in linked,
            anchor=rule.due.before,
        )
        for person in _distinct([*asked, *escalated])
    ]
    return PlanResult(planned, skipped)


def _holders(
    agreement: EffectiveAgreement, recipients: Iterable[Recipient], kind: NotificationKind
) -> tuple[list[Addressee], list[SkippedStep]]:
    """Everyone who holds each of ``recipients``, under it; a recipient nobody holds is a
    skipped message of ``kind``."""
    people: list[Addressee] = []
    skipped: list[SkippedStep] = []
    for recipient in recipients:
        contacts = agreement.contacts_for(recipient)
        if not contacts:
            skipped.append(SkippedStep(kind, 0, f"nobody has {recipient}"))
        people += [Addressee(c.id, str(recipient), c.name, c.email) for c in contacts]
    return people, skipped


def plan_to_holders(
    agreement: EffectiveAgreement,
    recipients: Iterable[Recipient],
    kind: NotificationKind,
    template: str,
    now: datetime,
) -> PlanResult:
    """One message of ``kind`` at once to everyone who holds each of ``recipients``, one per
    email address, whatever the center answers; a recipient nobody holds is a skipped step."""
    people, skipped = _holders(agreement, recipients, kind)
    planned = [_notice(kind, person, template, now) for person in _distinct(people)]
    return PlanResult(planned, skipped)


def plan_message(person: Addressee, template: str, now: datetime) -> PlannedNotification:
    """One message to one person at once, whatever the center answers."""
    return _notice(NotificationKind.FOLLOW_UP, person, template, now)


def _distinct(people: Iterable[Addressee]) -> list[Addressee]:
    """One per email address, the first one kept."""
    by_email: dict[str, Addressee] = {}
    for person in people:
        by_email.setdefault(person.email.lower(), person)
    return list(by_email.values())


def _notice(
    kind: NotificationKind,
    person: Addressee,
    template: str,
    due_at: datetime,
    *,
    level: int = 0,
    condition: Condition = Condition.ALWAYS,
    with_ack_link: bool = False,
    anchor: KeyDate | None = None,
) -> PlannedNotification:
    """A message of ``kind`` to ``person`` at ``due_at``, sent if ``condition`` still holds."""
    return PlannedNotification(
        kind=kind,
        level=level,
        role=person.role,
        contact_id=person.contact_id,
        recipient_name=person.name,
        recipient_email=person.email,
        template=template,
        due_at=due_at,
        condition=condition,
        with_ack_link=with_ack_link,
        anchor=anchor,
    )


_PlanStep = tuple[NotificationKind, int, Step | PatientStep, Condition]


def _unacknowledged_steps(plan: Plan) -> list[_PlanStep]:
    steps: list[_PlanStep] = [
        (NotificationKind.ESCALATION, level, step, Condition.UNACKNOWLEDGED)
        for level, step in enumerate(plan.steps)
    ]
    return steps + [
        (NotificationKind.PATIENT, level, step, Condition.UNACKNOWLEDGED)
        for level, step in enumerate(plan.patient_communication)
        if step.when == Condition.UNACKNOWLEDGED.value
    ]


def _acknowledged_steps(plan: Plan) -> list[_PlanStep]:
    return [
        (NotificationKind.PATIENT, level, step, Condition.ACKNOWLEDGED)
        for level, step in enumerate(plan.patient_communication)
        if step.when == Condition.ACKNOWLEDGED.value
    ]


@dataclass(frozen=True)
class RoundNotice:
    """An escalation notice of the incident's current round, as far as reaching its recipient
    goes."""

    notification_id: str
    role: str
    """The plan role it was sent under."""
    level: int
    reached: bool
    """A mail server accepted it (or is being handed it) and nothing came back."""
    waiting: bool
    """Not sent yet: it waits for its time (and for nobody to confirm first)."""
    may_stop: bool
    """Its recipient's confirmation would stop the escalation."""


@dataclass(frozen=True)
class BroughtForward:
    """What a notice that reached nobody brings forward, and why (or why nothing)."""

    notification_ids: tuple[str, ...]
    reason: str
    level: int | None = None


def bring_forward_for_unreached(
    unreached: RoundNotice, notices: Sequence[RoundNotice]
) -> BroughtForward:
    """The notices to send at once because ``unreached`` (bounced, refused) reached nobody: the
    escalation moves forward for that role only, since the others of its step may well have
    read theirs. A role somebody else holds and was reached is reached; otherwise its backup's
    next notice comes forward, or failing that the role's own next one; a role no later step
    names brings the next step forward only while nobody who may confirm has been reached."""
    role = unreached.role
    others = [n for n in notices if n.notification_id != unreached.notification_id]
    if any(n.reached and n.role == role for n in others):
        return BroughtForward((), f"another {role} was reached")
    later = [n for n in others if n.waiting and n.level > unreached.level]
    for target, whose in ((BACKUP_ROLES.get(role), "its backup"), (role, "its next step")):
        named = [n for n in later if n.role == target]
        if named:
            level = min(n.level for n in named)
            moved = tuple(n.notification_id for n in named if n.level == level)
            return BroughtForward(moved, f"{role} not reached: {whose}", level)
    if any(n.reached and n.may_stop for n in others):
        return BroughtForward(
            (), f"no later step names the {role}, and somebody who may confirm was reached"
        )
    if not later:
        return BroughtForward((), "no later step is waiting")
    level = min(n.level for n in later)
    moved = tuple(n.notification_id for n in later if n.level == level)
    return BroughtForward(moved, "nobody who may confirm was reached: the next step", level)


def plan_to_qa(
    agreement: EffectiveAgreement,
    qa_contact: Mapping[str, str] | None,
    kind: NotificationKind,
    template: str,
    due_at: datetime,
    condition: Condition,
) -> list[PlannedNotification]:
    """A message to the manufacturer's QA: the event's QA contact, else the agreement's QA desk."""
    role = f"{MANUFACTURER_PREFIX}{ManufacturerRole.QA}"
    if qa_contact:
        people = [Addressee("qa_contact", role, qa_contact["name"], qa_contact["email"])]
    else:
        people = [
            Addressee(c.id, role, c.name, c.email)
            for c in agreement.manufacturer_contacts.get(ManufacturerRole.QA, [])
        ]
    return [_notice(kind, person, template, due_at, condition=condition) for person in people]


def _business_hours_apply(plan: Plan, facts: IncidentFacts) -> bool:
    return facts.severity is not Severity.CRITICAL or plan.critical_uses_business_hours


def _plan_steps(
    agreement: EffectiveAgreement,
    plan: Plan,
    facts: IncidentFacts,
    trigger_at: datetime,
    steps: list[_PlanStep],
    not_before: datetime | None = None,
) -> PlanResult:
    calendar = CenterCalendar.of(agreement)
    business_hours_apply = _business_hours_apply(plan, facts)
    planned: list[PlannedNotification] = []
    skipped: list[SkippedStep] = []
    for kind, level, step, condition in steps:
        due_at = _due_at(step, facts, calendar, trigger_at, business_hours_apply)
        if due_at is None:
            skipped.append(SkippedStep(kind, level, f"the incident has no key date {step.before}"))
            continue
        if not_before is not None:
            due_at = max(due_at, not_before)
        seen: set[str] = set()
        for recipient in step.notify:
            contacts = agreement.contacts_for(recipient)
            if not contacts:
                skipped.append(SkippedStep(kind, level, f"nobody has the role {recipient}"))
            for contact in contacts:
                if contact.email.lower() in seen:
                    continue
                seen.add(contact.email.lower())
                planned.append(
                    PlannedNotification(
                        kind=kind,
                        level=level,
                        role=str(recipient),
                        contact_id=contact.id,
                        recipient_name=contact.name,
                        recipient_email=contact.email,
                        template=step.template,
                        due_at=due_at,
                        condition=condition,
                        # Only the escalation's own center contacts get a link (and only the
                        # plan's stops_escalation roles stop it): a patient liaison's
                        # confirmation must not silence the clinical team's notice.
                        with_ack_link=(
                            kind is NotificationKind.ESCALATION and not recipient.manufacturer
                        ),
                        anchor=step.before,
                    )
                )
    return PlanResult(planned, skipped)


def _due_at(
    step: Timing,
    facts: IncidentFacts,
    calendar: CenterCalendar,
    trigger_at: datetime,
    business_hours_apply: bool,
) -> datetime | None:
    """When a step is due; a time already past means 'now' (the promise is to tell, late or not)."""
    business_hours = step.business_hours and business_hours_apply
    if step.after is not None:
        return business_time.add(trigger_at, step.after, calendar, business_hours)
    assert step.before is not None and step.by is not None  # guaranteed by Timing's validator
    key_date = facts.key_dates.get(step.before)
    if key_date is None:
        return None
    due = business_time.subtract(calendar.start_of(key_date), step.by, calendar, business_hours)
    return max(due, trigger_at)
