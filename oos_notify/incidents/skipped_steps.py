"""The steps planning had to skip, written to the audit trail: a gap shown, not silent."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session

from oos_notify.incidents.planning import SkippedStep
from oos_notify.store import audit


def record(
    session: Session, incident_id: str, skipped: Iterable[SkippedStep], now: datetime
) -> None:
    """One ``step_skipped`` entry for each step, with its kind, level and reason."""
    for step in skipped:
        audit.record(
            session,
            now,
            "step_skipped",
            "planner",
            incident_id=incident_id,
            kind=step.kind.value,
            level=step.level,
            reason=step.reason,
        )
