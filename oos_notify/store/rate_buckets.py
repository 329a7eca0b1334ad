"""Token buckets kept in the database, so that every replica spends from the same one.

A bucket holds up to ``burst`` tokens and refills at ``per_minute``; each taken event spends one.
Taking locks the key's row until the transaction ends, so replicas taking from one bucket at once
queue on that row only, and two of them can never spend the same token.
"""

from __future__ import annotations

import math
from datetime import datetime

from sqlmodel import Session, col, select, update

from oos_notify.store.db import insert_missing
from oos_notify.store.models import RateBucket

_BUCKETS = RateBucket.__table__  # type: ignore[attr-defined]


def refill(
    tokens: float, since: datetime, now: datetime, per_minute: float, burst: int
) -> tuple[float, datetime]:
    """The bucket at ``now``; a clock set back refills nothing, now or when it catches up."""
    elapsed = max((now - since).total_seconds(), 0.0)
    return min(float(burst), tokens + elapsed * per_minute / 60), max(since, now)


def take(session: Session, key_id: str, now: datetime, per_minute: float, burst: int) -> int | None:
    """Spend one of ``key_id``'s tokens: None if there was one, else the whole seconds until
    there is."""
    row = _locked(session, key_id)
    if row is None:
        insert_missing(
            session, _BUCKETS, [{"key_id": key_id, "tokens": float(burst), "refilled_at": now}]
        )
        row = _locked(session, key_id)
        assert row is not None
    tokens, since = refill(row.tokens, row.refilled_at, now, per_minute, burst)
    granted = tokens >= 1
    session.execute(
        update(RateBucket)
        .where(col(RateBucket.key_id) == key_id)
        .values(tokens=tokens - 1 if granted else tokens, refilled_at=since)
    )
    return None if granted else max(1, math.ceil((1 - tokens) * 60 / per_minute))


def _locked(session: Session, key_id: str) -> RateBucket | None:
    return session.exec(
        select(RateBucket).where(col(RateBucket.key_id) == key_id).with_for_update()
    ).first()
