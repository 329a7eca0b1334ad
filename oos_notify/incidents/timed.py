"""What the service does when one of its timers is due, with no event arriving: a call task's
deadline escalates it if it is still open; a rule's threshold crossed re-derives the severity
(audited, the unsent steps re-planned on the faster clock) and opens the call tasks it asks for.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlmodel import Session

from oos_notify.agreements.business_time import CenterCalendar
from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.agreements.vocabulary import SEVERITY_ORDER, EventType, KeyDate, Severity
from oos_notify.incidents import call_tasks, clock_rules, events
from oos_notify.incidents.planning import derive_severity
from oos_notify.store import audit, timers
from oos_notify.store.lifecycle import IncidentStatus
from oos_notify.store.models import Incident
from oos_notify.store.timers import TimerKind


def run(session: Session, timer_id: str, now: datetime, mail_domain: str) -> bool:
    """Claim one due timer and do its work in this transaction; False when another process
    took it first."""
    timer = timers.claim(session, timer_id, now)
    if timer is None:
        return False
    if timer.kind == TimerKind.CALL_TASK_DUE and timer.subject_id is not None:
        call_tasks.escalate_if_open(session, timer.subject_id, now, mail_domain)
    elif timer.kind == TimerKind.CLOCK_RULES:
        threshold_crossed(session, timer.incident_id, now, mail_domain)
    return True


def threshold_crossed(session: Session, incident_id: str, now: datetime, mail_domain: str) -> None:
    """The clock crossed a rule's threshold: the severity rules are applied to the incident as it
    is now (the severity only rises on its own), the call rules too, and the timer moves on."""
    incident = session.get(Incident, incident_id)
    assert incident is not None
    if IncidentStatus(incident.status).is_closed:
        return
    agreement = EffectiveAgreement.stored(incident.agreement)
    severity, rule = derive_severity(
        agreement.severity_rules,
        EventType(incident.plan_type),
        (a["attribute"] for a in incident.failed_attributes),
        {KeyDate(k): date.fromisoformat(v) for k, v in incident.key_dates.items()},
        CenterCalendar.of(agreement),
        now,
    )
    if SEVERITY_ORDER.index(severity) < SEVERITY_ORDER.index(Severity(incident.severity)):
        audit.record(
            session,
            now,
            "severity_changed",
            "clock",
            incident_id=incident.id,
            event_type=None,
            severity_from=incident.severity,
            severity_to=severity,
            severity_rule=rule,
        )
        incident.severity, incident.severity_rule = severity, rule
        incident.updated_at = now
        session.add(incident)
        events.schedule_plan(
            session,
            incident,
            events.replan_faster(session, incident, agreement, set(), now),
            now,
            mail_domain,
        )
    clock_rules.after_change(session, incident, now, mail_domain)
