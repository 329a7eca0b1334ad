"""The limits for several processes: the buckets in the database, not in memory.

On PostgreSQL any number of API processes share one database, and an in-memory bucket per
process would let N of them allow N times a rate: a key's events, a client's failed
authentications, a client's requests to acknowledgement links. On SQLite one process owns the
file, so its in-memory ``TokenBuckets`` already are the shared ones, and cost no write per
request.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from oos_notify.store import rate_buckets
from oos_notify.web.limits import RateLimited, TokenBuckets

FORGET_EVERY = timedelta(minutes=1)
"""How often a process deletes the buckets that are full again."""


class DatabaseBuckets:
    """``TokenBuckets`` with the same ``check`` and ``take``, kept in the ``rate_buckets`` table.
    ``name`` keeps the keys of one limit apart from another's in that table."""

    def __init__(self, engine: Engine, name: str, per_minute: float, burst: int) -> None:
        self.name = name
        self.per_minute = per_minute
        self.burst = burst
        self._engine = engine
        self._forgotten_at: datetime | None = None
        self._lock = threading.Lock()

    def check(self, key: str, now: datetime) -> None:
        """Raise RateLimited if ``key`` has no token left, spending none."""
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            retry_after = rate_buckets.check(
                connection, self._key(key), now, self.per_minute, self.burst
            )
        if retry_after is not None:
            raise RateLimited(retry_after)

    def take(self, key: str, now: datetime) -> None:
        """Spend one token of ``key``'s bucket, or raise RateLimited saying when to come back."""
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            retry_after = rate_buckets.take(
                connection, self._key(key), now, self.per_minute, self.burst
            )
            if self._forget_due(now):
                rate_buckets.forget_full(connection, now)
        if retry_after is not None:
            raise RateLimited(retry_after)

    def _key(self, key: str) -> str:
        return f"{self.name}:{key}"

    def _forget_due(self, now: datetime) -> bool:
        with self._lock:
            if self._forgotten_at is not None and now - self._forgotten_at < FORGET_EVERY:
                return False
            self._forgotten_at = now
            return True


def shared_limit(
    engine: Engine, name: str, per_minute: float, burst: int
) -> TokenBuckets | DatabaseBuckets:
    """The buckets a process of this database keeps the limit ``name`` in."""
    if engine.dialect.name == "sqlite":
        return TokenBuckets(per_minute, burst)
    return DatabaseBuckets(engine, name, per_minute, burst)
