"""A center's agreement as it is in force, and what an incident opened now would send when:
computed by the very planner and calendar the service uses, so the page cannot disagree with
what would happen."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from oos_notify.agreements import business_time
from oos_notify.agreements.business_time import CenterCalendar
from oos_notify.agreements.config import (
    Contact,
    EffectiveAgreement,
    ManufacturerContact,
    PatientStep,
    Step,
)
from oos_notify.agreements.vocabulary import CenterRole, EventType, KeyDate, Severity
from oos_notify.delivery.rendering import KEY_DATE_LABELS
from oos_notify.incidents.planning import IncidentFacts, SkippedStep, plan_opening
from oos_notify.web.console.fmt import role
from oos_notify.web.console.incident import step_name


@dataclass(frozen=True)
class RoleContacts:
    role: str
    contacts: list[Contact]
    inherited: bool
    """From the health system: the site has nobody of its own in this role."""


def contacts_by_role(agreement: EffectiveAgreement) -> list[RoleContacts]:
    """Who each center role reaches, as ``contacts_for`` resolves it: the site's own people,
    else the health system's."""
    found = []
    for center_role in CenterRole:
        own = [c for c in agreement.contacts if center_role in c.roles]
        inherited = [c for c in agreement.system_contacts if center_role in c.roles]
        if own or inherited:
            found.append(RoleContacts(center_role.value, own or inherited, not own))
    return found


def manufacturer_contacts(
    agreement: EffectiveAgreement,
) -> list[tuple[str, list[ManufacturerContact]]]:
    return [
        (role.value, people) for role, people in agreement.manufacturer_contacts.items() if people
    ]


def timing(step: Step | PatientStep) -> str:
    """When a step fires, as the agreement says it: ``2h after``, ``48h before lymphodepletion
    start``, with ``in business hours`` when it counts only those."""
    if step.after is not None:
        text = "at once" if step.after.amount == 0 else f"{step.after} after"
    else:
        assert step.before is not None
        text = f"{step.by} before {KEY_DATE_LABELS[step.before].lower()}"
    return f"{text}, in business hours" if step.business_hours else text


@dataclass(frozen=True)
class DayOff:
    day: date
    name: str


def days_off(agreement: EffectiveAgreement, today: date, limit: int = 8) -> list[DayOff]:
    """The next public holidays the center does not work and its closure dates, within a year."""
    calendar = CenterCalendar.of(agreement)
    found: list[DayOff] = []
    for offset in range(366):
        day = today + timedelta(days=offset)
        if day in calendar.closed_dates:
            found.append(DayOff(day, "closure"))
        elif names := calendar.holiday_names(day):
            found.append(DayOff(day, "; ".join(names)))
        if len(found) == limit:
            break
    return found


@dataclass(frozen=True)
class Fired:
    """Notifications an incident opened now would send at one instant, for one step."""

    due_at: datetime
    step: str
    template: str
    recipients: list[tuple[str, str]]
    """(role, contact name)"""


@dataclass(frozen=True)
class WhatIf:
    event_type: EventType
    severity: Severity
    key_dates: Mapping[KeyDate, date]
    opened_at: datetime
    deadline: datetime | None
    """The ``notify_within`` promise's deadline for this severity."""
    fired: list[Fired]
    skipped: list[SkippedStep]


def what_if(
    agreement: EffectiveAgreement,
    event_type: EventType,
    severity: Severity,
    key_dates: Mapping[KeyDate, date],
    now: datetime,
) -> WhatIf:
    """The steps an incident opened ``now`` would send, from ``plan_opening`` itself."""
    result = plan_opening(agreement, IncidentFacts(event_type, severity, key_dates), now)
    grouped: dict[tuple[datetime, str, int, str], Fired] = {}
    for planned in result.notifications:
        key = (planned.due_at, planned.kind.value, planned.level, planned.template)
        fired = grouped.setdefault(
            key,
            Fired(planned.due_at, step_name(planned.kind, planned.level), planned.template, []),
        )
        fired.recipients.append((role(planned.role), planned.recipient_name))
    promise = agreement.notify_within.get(severity)
    calendar = CenterCalendar.of(agreement)
    return WhatIf(
        event_type,
        severity,
        key_dates,
        now,
        business_time.add(now, promise, calendar, business_hours=False) if promise else None,
        sorted(grouped.values(), key=lambda f: f.due_at),
        result.skipped,
    )
