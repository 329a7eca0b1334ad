"""Incident and notification statuses, with every allowed transition written down in one place,
and what kind of message a notification is and what it waits for."""

from __future__ import annotations

from enum import StrEnum


class IncidentStatus(StrEnum):
    NOTIFYING = "notifying"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    WITHDRAWN = "withdrawn"

    @property
    def is_closed(self) -> bool:
        """A closed incident takes no acknowledgements and no events, but for the late result
        that reopens a resolved one (a 14-day sterility culture can end after the closing)."""
        return self in (IncidentStatus.RESOLVED, IncidentStatus.WITHDRAWN)


INCIDENT_TRANSITIONS: dict[IncidentStatus, frozenset[IncidentStatus]] = {
    IncidentStatus.NOTIFYING: frozenset(
        {
            IncidentStatus.ESCALATED,
            IncidentStatus.ACKNOWLEDGED,
            IncidentStatus.RESOLVED,
            IncidentStatus.WITHDRAWN,
        }
    ),
    # -> NOTIFYING: a late result restarts the escalation under the urgent plan.
    IncidentStatus.ESCALATED: frozenset(
        {
            IncidentStatus.NOTIFYING,
            IncidentStatus.ACKNOWLEDGED,
            IncidentStatus.RESOLVED,
            IncidentStatus.WITHDRAWN,
        }
    ),
    IncidentStatus.ACKNOWLEDGED: frozenset(
        {IncidentStatus.NOTIFYING, IncidentStatus.RESOLVED, IncidentStatus.WITHDRAWN}
    ),
    # -> NOTIFYING: a late result reopens a resolved incident under the urgent plan.
    IncidentStatus.RESOLVED: frozenset({IncidentStatus.NOTIFYING}),
    IncidentStatus.WITHDRAWN: frozenset(),
}


class NotificationStatus(StrEnum):
    SCHEDULED = "scheduled"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


NOTIFICATION_TRANSITIONS: dict[NotificationStatus, frozenset[NotificationStatus]] = {
    NotificationStatus.SCHEDULED: frozenset(
        {NotificationStatus.SENDING, NotificationStatus.CANCELLED}
    ),
    # SENDING -> SCHEDULED is a retry after a transient failure; SENDING -> SENDING is a claim
    # taken over after the claimer's lease ran out (it crashed mid-send).
    NotificationStatus.SENDING: frozenset(
        {
            NotificationStatus.SENT,
            NotificationStatus.SCHEDULED,
            NotificationStatus.FAILED,
            NotificationStatus.SENDING,
        }
    ),
    # SENT -> FAILED: the mail server accepted the message, and a bounce came back later.
    NotificationStatus.SENT: frozenset({NotificationStatus.FAILED}),
    NotificationStatus.FAILED: frozenset(),
    NotificationStatus.CANCELLED: frozenset(),
}


def can_move(current: IncidentStatus, target: IncidentStatus) -> bool:
    """Whether an incident may go from ``current`` to ``target``."""
    return target in INCIDENT_TRANSITIONS[current]


def incident_sources(target: IncidentStatus) -> list[str]:
    """The incident statuses that may move to ``target``: the guard of a conditional update."""
    return [s.value for s, targets in INCIDENT_TRANSITIONS.items() if target in targets]


def notification_sources(target: NotificationStatus) -> list[str]:
    """The notification statuses that may move to ``target``: the guard of a conditional update."""
    return [s.value for s, targets in NOTIFICATION_TRANSITIONS.items() if target in targets]


class NotificationKind(StrEnum):
    ESCALATION = "escalation"
    """A step of the escalation plan; stopped by an acknowledgement."""
    PATIENT = "patient"
    """A patient-communication step for the patient liaison."""
    RECEIPT = "receipt"
    """A message to the manufacturer about the center's answer."""
    FOLLOW_UP = "follow_up"
    """News of a follow-up event (disposition, update, late result, closing) for those told."""
    DECISION = "decision"
    """Asks the treating physician to decide on an out-of-specification product offered for
    release; answered on the acknowledgement page."""
    DELIVERY_FAILURE = "delivery_failure"
    """A message to the manufacturer that a notification could not be delivered."""
    DECISION_OVERDUE = "decision_overdue"
    """The decision is still missing at the plan's ``decision.due``: the deciders get their
    link again, and the plan's ``decision.escalate`` roles hear of it; a decision cancels it."""
    FORWARDED_REPLY = "forwarded_reply"
    """A center's reply by email that did not confirm, forwarded to the manufacturer's QA."""
    CALL_TASK = "call_task"
    """Tells a manufacturer role that it must phone the center (a call task), with the numbers."""
    CALL_TASK_OVERDUE = "call_task_overdue"
    """A call task still open at its deadline, told to the roles its rule escalates to."""
    PHYSICIAN = "physician"
    """A step for the patient's treating physician named in the event: only the physician's
    own confirmation or decision cancels it, never a coordinator's."""
    REGULATORY_CLOCK = "regulatory_clock"
    """A reminder (level 0) or a missed deadline (level 1) of a report owed to an authority;
    the report's reference closes the clock and cancels it, the incident's resolution does not."""

    @property
    def reports_to_qa(self) -> bool:
        """Messages to the manufacturer's QA are not themselves reported when they fail: the
        report would go to the address that just refused mail, and could loop."""
        return self in (
            NotificationKind.RECEIPT,
            NotificationKind.DELIVERY_FAILURE,
            NotificationKind.FORWARDED_REPLY,
        )


class Condition(StrEnum):
    UNACKNOWLEDGED = "unacknowledged"
    """Sent only while nobody has acknowledged: an acknowledgement cancels it."""
    ACKNOWLEDGED = "acknowledged"
    """Planned when the incident is acknowledged."""
    ALWAYS = "always"
    """Sent whatever the center answers; only closing the incident cancels it."""
    UNDECIDED = "undecided"
    """Sent only while no decision on the offered product is recorded: a decision cancels it."""
    PHYSICIAN_UNCONFIRMED = "physician_unconfirmed"
    """Sent only while the treating physician has not confirmed or decided themselves."""
    CLOCK_OPEN = "clock_open"
    """Sent only while its regulatory clock has no report reference: the reference cancels it."""
