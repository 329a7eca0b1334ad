"""What to send to whom and when: pure functions from an incident and its agreement."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from oos_notify import business_time
from oos_notify.agreements import EffectiveAgreement, PatientStep, Plan, Step
from oos_notify.business_time import CenterCalendar
from oos_notify.vocabulary import EventType, KeyDate, Severity


class NotificationKind(StrEnum):
    ESCALATION = "escalation"
    """A step of the escalation plan; stopped by an acknowledgement."""
    PATIENT = "patient"
    """A patient-communication step for the patient liaison."""
    RECEIPT = "receipt"
    """A message to the manufacturer about the center's answer."""


class Condition(StrEnum):
    UNACKNOWLEDGED = "unacknowledged"
    """Sent only while nobody has acknowledged: an acknowledgement cancels it."""
    ACKNOWLEDGED = "acknowledged"
    """Planned when the incident is acknowledged."""


@dataclass(frozen=True)
class IncidentFacts:
    """What planning needs to know about an incident."""

    event_type: EventType
    severity: Severity
    key_dates: Mapping[KeyDate, date]


@dataclass(frozen=True)
class PlannedNotification:
    kind: NotificationKind
    level: int
    """The step's position in its list: 0 is the first notice, 1 the first escalation, ..."""
    role: str
    contact_id: str
    recipient_name: str
    recipient_email: str
    template: str
    due_at: datetime
    condition: Condition
    with_ack_link: bool


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
    event_type: EventType, failed_attributes: Iterable[str]
) -> tuple[Severity, str]:
    """The severity of an event that came without one, and the name of the rule that chose it."""
    attributes = {a.strip().lower() for a in failed_attributes}
    if event_type is EventType.LATE_RESULT and attributes & {
        "sterility",
        "mycoplasma",
        "endotoxin",
    }:
        return Severity.CRITICAL, "late safety result (sterility, mycoplasma, endotoxin)"
    if event_type is EventType.LATE_RESULT:
        return Severity.CRITICAL, "late result after release"
    return Severity.MAJOR, "release failure without stated severity"


def plan_for(agreement: EffectiveAgreement, event_type: EventType) -> Plan:
    """The escalation plan an opening event runs under at this center."""
    return agreement.plans[event_type]


def plan_opening(
    agreement: EffectiveAgreement, facts: IncidentFacts, opened_at: datetime
) -> PlanResult:
    """The notifications an incident schedules when it opens."""
    plan = plan_for(agreement, facts.event_type)
    calendar = CenterCalendar.of(agreement)
    steps: list[tuple[NotificationKind, int, Step | PatientStep]] = [
        (NotificationKind.ESCALATION, level, step) for level, step in enumerate(plan.steps)
    ]
    steps += [
        (NotificationKind.PATIENT, level, step)
        for level, step in enumerate(plan.patient_communication)
        if step.when == Condition.UNACKNOWLEDGED.value
    ]
    return _plan_steps(agreement, calendar, facts, opened_at, steps, Condition.UNACKNOWLEDGED)


def plan_acknowledged(
    agreement: EffectiveAgreement, facts: IncidentFacts, acknowledged_at: datetime
) -> PlanResult:
    """The notifications an acknowledgement starts (the ``when: acknowledged`` steps)."""
    plan = plan_for(agreement, facts.event_type)
    calendar = CenterCalendar.of(agreement)
    steps: list[tuple[NotificationKind, int, Step | PatientStep]] = [
        (NotificationKind.PATIENT, level, step)
        for level, step in enumerate(plan.patient_communication)
        if step.when == Condition.ACKNOWLEDGED.value
    ]
    return _plan_steps(agreement, calendar, facts, acknowledged_at, steps, Condition.ACKNOWLEDGED)


def _plan_steps(
    agreement: EffectiveAgreement,
    calendar: CenterCalendar,
    facts: IncidentFacts,
    trigger_at: datetime,
    steps: list[tuple[NotificationKind, int, Step | PatientStep]],
    condition: Condition,
) -> PlanResult:
    planned: list[PlannedNotification] = []
    skipped: list[SkippedStep] = []
    for kind, level, step in steps:
        due_at = _due_at(step, facts, calendar, trigger_at)
        if due_at is None:
            skipped.append(SkippedStep(kind, level, f"the incident has no key date {step.before}"))
            continue
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
                        # Only the escalation's own center contacts can stop it: a patient
                        # liaison's confirmation must not silence the clinical team's notice.
                        with_ack_link=(
                            kind is NotificationKind.ESCALATION and not recipient.manufacturer
                        ),
                    )
                )
    return PlanResult(planned, skipped)


def _due_at(
    step: Step | PatientStep,
    facts: IncidentFacts,
    calendar: CenterCalendar,
    trigger_at: datetime,
) -> datetime | None:
    """When a step is due; a time already past means 'now' (the promise is to tell, late or not)."""
    business_hours = step.business_hours and facts.severity is not Severity.CRITICAL
    if step.after is not None:
        return business_time.add(trigger_at, step.after, calendar, business_hours)
    assert step.before is not None and step.by is not None  # guaranteed by Timing's validator
    key_date = facts.key_dates.get(step.before)
    if key_date is None:
        return None
    due = business_time.subtract(calendar.start_of(key_date), step.by, calendar)
    return max(due, trigger_at)
