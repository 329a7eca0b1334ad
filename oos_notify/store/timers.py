"""Timers: instants at which the service acts on an incident with no event arriving.

A timer is a row with a due time, claimed by the dispatcher like a notification: a conditional
update (``scheduled`` to ``done``) that one process wins, in the transaction that does the timer's
work, so a crash before the commit leaves it scheduled and a replica never runs it twice. What a
timer does is the incidents layer's business (``incidents.clock``); this module only keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, insert, update
from sqlmodel import Session, col, select

from oos_notify.ids import new_id
from oos_notify.store import audit, wakeups
from oos_notify.store.models import Timer


class TimerKind(StrEnum):
    CLOCK_RULES = "clock_rules"
    """A severity rule's or call rule's threshold is crossed: apply them again."""
    CALL_TASK_DUE = "call_task_due"
    """A call task's deadline: escalate it if it is still open."""


class TimerStatus(StrEnum):
    SCHEDULED = "scheduled"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"
    """Its work raised an error: recorded on the incident's timeline, not tried again."""


def schedule(
    session: Session,
    incident_id: str,
    kind: TimerKind,
    due_at: datetime,
    now: datetime,
    subject_id: str | None = None,
) -> str:
    """Add a timer; return its id. The workers are woken to arm their clocks for it. Inserted
    at once, not added to the session: nothing in the transaction changes it again, and the
    unit of work cost more than the insert (it runs for every event that opens an incident)."""
    timer_id = new_id("tmr")
    session.execute(
        insert(Timer).values(
            id=timer_id,
            incident_id=incident_id,
            kind=kind.value,
            subject_id=subject_id,
            due_at=due_at,
            status=TimerStatus.SCHEDULED.value,
            created_at=now,
        )
    )
    wakeups.announce(session)
    return timer_id


def cancel(
    session: Session, incident_id: str, kind: TimerKind, subject_id: str | None = None
) -> int:
    """Cancel the incident's scheduled timers of ``kind`` (for ``subject_id`` when given)."""
    criteria = [
        col(Timer.incident_id) == incident_id,
        col(Timer.kind) == kind.value,
        col(Timer.status) == TimerStatus.SCHEDULED.value,
    ]
    if subject_id is not None:
        criteria.append(col(Timer.subject_id) == subject_id)
    result = session.execute(
        update(Timer).where(*criteria).values(status=TimerStatus.CANCELLED.value)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def due(session: Session, now: datetime, limit: int) -> Sequence[str]:
    """The ids of up to ``limit`` timers due at ``now``, earliest first."""
    return session.exec(
        select(Timer.id)
        .where(col(Timer.status) == TimerStatus.SCHEDULED.value, col(Timer.due_at) <= now)
        .order_by(col(Timer.due_at), col(Timer.id))
        .limit(limit)
    ).all()


def claim(session: Session, timer_id: str, now: datetime) -> Timer | None:
    """Take one due timer for this transaction: None when another process took it first (or it
    was cancelled meanwhile). The claim commits with the work the timer does, or not at all."""
    claimed = session.execute(
        update(Timer)
        .where(
            col(Timer.id) == timer_id,
            col(Timer.status) == TimerStatus.SCHEDULED.value,
            col(Timer.due_at) <= now,
        )
        .values(status=TimerStatus.DONE.value, done_at=now)
        .returning(col(Timer.id))
        .execution_options(synchronize_session=False)
    ).first()
    if claimed is None:
        return None
    return session.get(Timer, timer_id)


def fail(session: Session, timer_id: str, now: datetime, error: str) -> None:
    """Mark a timer whose work failed, so that it is not tried on every run, and say so on the
    incident's timeline."""
    timer = session.get(Timer, timer_id)
    if timer is None or timer.status != TimerStatus.SCHEDULED:
        return
    timer.status, timer.done_at = TimerStatus.FAILED.value, now
    session.add(timer)
    audit.record(
        session,
        now,
        "timer_failed",
        "system",
        incident_id=timer.incident_id,
        kind=timer.kind,
        error=error,
    )


def next_due(session: Session) -> datetime | None:
    """The earliest due time of a scheduled timer, to arm the dispatch timer."""
    return session.exec(
        select(func.min(Timer.due_at)).where(Timer.status == TimerStatus.SCHEDULED.value)
    ).one()


def scheduled(session: Session, incident_id: str) -> list[Timer]:
    """The incident's timers still to run, earliest first."""
    return list(
        session.exec(
            select(Timer)
            .where(
                col(Timer.incident_id) == incident_id,
                col(Timer.status) == TimerStatus.SCHEDULED.value,
            )
            .order_by(col(Timer.due_at))
        ).all()
    )
