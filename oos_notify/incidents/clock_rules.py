"""Rules that follow the clock: a severity rule or a call rule whose condition is a time to a key
date ("lymphodepletion within 72 h") starts to hold at an instant no event announces. Each
incident keeps one timer at the next such instant; when it is due the rules are applied again
(``incidents.timed``), and after every change of the incident's facts the timer moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime

from sqlmodel import Session

from oos_notify.agreements import business_time
from oos_notify.agreements.business_time import CenterCalendar
from oos_notify.agreements.config import CallRule, EffectiveAgreement, SeverityRule
from oos_notify.agreements.vocabulary import SEVERITY_ORDER, EventType, KeyDate, Severity
from oos_notify.incidents import call_tasks
from oos_notify.incidents.call_tasks import call_thresholds
from oos_notify.store import timers
from oos_notify.store.lifecycle import IncidentStatus
from oos_notify.store.models import Incident
from oos_notify.store.outbox import PlannedNotification
from oos_notify.store.timers import TimerKind


def severity_thresholds(
    rules: Sequence[SeverityRule],
    event_type: EventType,
    severity: Severity,
    failed_attributes: Iterable[str],
    key_dates: Mapping[KeyDate, date],
    calendar: CenterCalendar,
) -> list[datetime]:
    """The instants at which a rule more severe than ``severity``, whose other conditions hold
    already, starts to hold because a key date comes within its reach."""
    attributes = {a.strip().lower() for a in failed_attributes}
    instants = []
    for rule in rules:
        if SEVERITY_ORDER.index(rule.severity) >= SEVERITY_ORDER.index(severity):
            continue
        if rule.event_type and event_type not in rule.event_type:
            continue
        if rule.failed_attribute and not attributes & {a.lower() for a in rule.failed_attribute}:
            continue
        for key, within in rule.key_date_within.items():
            if key in key_dates:
                instants.append(
                    business_time.subtract(
                        calendar.start_of(key_dates[key]), within, calendar, business_hours=False
                    )
                )
    return instants


def next_crossing(
    severity_rules: Sequence[SeverityRule],
    call_rules: Sequence[CallRule],
    event_type: EventType,
    severity: Severity,
    failed_attributes: Iterable[str],
    key_dates: Mapping[KeyDate, date],
    calendar: CenterCalendar,
    now: datetime,
) -> datetime | None:
    """The first instant after ``now`` at which a severity rule would raise the severity or a
    call rule would start to hold, with the facts as they are; None when there is none."""
    instants = [
        *severity_thresholds(
            severity_rules, event_type, severity, failed_attributes, key_dates, calendar
        ),
        *call_thresholds(call_rules, key_dates, calendar),
    ]
    return min((i for i in instants if i > now), default=None)


def watch(
    session: Session, incident: Incident, now: datetime, opened: bool = False
) -> datetime | None:
    """Keep the incident's one clock timer at its next crossing (none once it is closed);
    a closed incident's call tasks escalate no more. Returns when the timer is due. An incident
    ``opened`` in this transaction has no timer yet: there is none to cancel."""
    if not opened:
        timers.cancel(session, incident.id, TimerKind.CLOCK_RULES)
    if IncidentStatus(incident.status).is_closed:
        timers.cancel(session, incident.id, TimerKind.CALL_TASK_DUE)
        return None
    agreement = EffectiveAgreement.stored(incident.agreement)
    event_type = EventType(incident.plan_type)
    crossing = next_crossing(
        agreement.severity_rules,
        agreement.plans[event_type].calls,
        event_type,
        Severity(incident.severity),
        (a["attribute"] for a in incident.failed_attributes),
        {KeyDate(k): date.fromisoformat(v) for k, v in incident.key_dates.items()},
        CenterCalendar.of(agreement),
        now,
    )
    if crossing is not None:
        timers.schedule(session, incident.id, TimerKind.CLOCK_RULES, crossing, now)
    return crossing


def after_change(
    session: Session, incident: Incident, now: datetime, mail_domain: str, opened: bool = False
) -> list[tuple[str, PlannedNotification]]:
    """After an incident ``opened`` or its facts changed: open the call tasks its rules now ask
    for, and move its clock timer. Returns the messages the new call tasks scheduled."""
    scheduled = call_tasks.apply_call_rules(session, incident, now, mail_domain)
    watch(session, incident, now, opened)
    return scheduled
