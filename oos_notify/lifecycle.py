"""Incident and notification statuses, with every allowed transition written down in one place."""

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
        """A closed incident goes nowhere: it takes no further events or acknowledgements."""
        return not INCIDENT_TRANSITIONS[self]


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
    IncidentStatus.RESOLVED: frozenset(),
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
    NotificationStatus.SENT: frozenset(),
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
