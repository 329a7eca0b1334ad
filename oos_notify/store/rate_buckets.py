"""Token buckets kept in the database, so that every replica spends from the same one.

A bucket holds up to ``burst`` tokens and refills at ``per_minute``; each taken request spends one.
It is kept as one instant per key (the generic cell rate algorithm): when the bucket would be
empty, were nothing refilled meanwhile. Taking a token moves that instant on by one token's
worth of time, unless it would then lie more than a whole burst ahead of now, which means the
bucket is empty. That is one conditional statement, run on its own: the key's row is locked
only while the database runs it, so API processes taking from one bucket at once wait for each
other for microseconds, not for each other's round trips.
"""

from __future__ import annotations

import math
from datetime import datetime

from sqlalchemy import Connection, delete, func, select

from oos_notify.store.models import RateBucket

_BUCKETS = RateBucket.__table__  # type: ignore[attr-defined]


def take(
    connection: Connection, key_id: str, now: datetime, per_minute: float, burst: int
) -> int | None:
    """Spend one of ``key_id``'s tokens: None if there was one, else the whole seconds until
    there is. PostgreSQL only: SQLite keeps its buckets in the one process that owns it."""
    from sqlalchemy.dialects import postgresql  # not loaded on SQLite

    token = 60 / per_minute
    at = now.timestamp()
    later = func.greatest(_BUCKETS.c.allowed_from, at) + token
    statement = postgresql.insert(_BUCKETS).values(key_id=key_id, allowed_from=at + token)
    taken = connection.execute(
        statement.on_conflict_do_update(
            index_elements=[_BUCKETS.c.key_id],
            set_={"allowed_from": later},
            where=later - at <= burst * token,
        ).returning(_BUCKETS.c.allowed_from)
    ).first()
    if taken is not None:
        return None
    allowed_from: float = connection.execute(
        select(_BUCKETS.c.allowed_from).where(_BUCKETS.c.key_id == key_id)
    ).scalar_one()
    return _retry_after(allowed_from, at, token, burst)


def check(
    connection: Connection, key_id: str, now: datetime, per_minute: float, burst: int
) -> int | None:
    """Whether ``key_id`` has a token, spending none: None if it has, else the whole seconds
    until it has."""
    token = 60 / per_minute
    at = now.timestamp()
    allowed_from = connection.execute(
        select(_BUCKETS.c.allowed_from).where(_BUCKETS.c.key_id == key_id)
    ).scalar_one_or_none()
    if allowed_from is None or max(allowed_from, at) + token - at <= burst * token:
        return None
    return _retry_after(allowed_from, at, token, burst)


def forget_full(connection: Connection, now: datetime) -> int:
    """Delete the buckets that are full again (no row is a full bucket): a flood of client
    addresses leaves rows behind for no longer than it takes their buckets to refill."""
    return connection.execute(
        delete(_BUCKETS).where(_BUCKETS.c.allowed_from <= now.timestamp())
    ).rowcount


def _retry_after(allowed_from: float, at: float, token: float, burst: int) -> int:
    return max(1, math.ceil(max(allowed_from, at) + token - burst * token - at))
