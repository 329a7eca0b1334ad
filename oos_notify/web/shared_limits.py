"""The per-key event limit for several processes: the buckets in the database, not in memory.

On PostgreSQL any number of API processes share one database, and an in-memory bucket per
process would let N of them accept N times a key's rate. On SQLite one process owns the file, so
its in-memory ``TokenBuckets`` already are the shared ones, and cost no write per request.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine

from oos_notify.store import rate_buckets
from oos_notify.web.limits import RateLimited, TokenBuckets


class DatabaseBuckets:
    """``TokenBuckets`` with the same ``take``, kept in the ``rate_buckets`` table."""

    def __init__(self, engine: Engine, per_minute: float, burst: int) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self._engine = engine

    def take(self, key: str, now: datetime) -> None:
        """Spend one token of ``key``'s bucket, or raise RateLimited saying when to come back."""
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            retry_after = rate_buckets.take(connection, key, now, self.per_minute, self.burst)
        if retry_after is not None:
            raise RateLimited(retry_after)


def event_limit(engine: Engine, per_minute: float, burst: int) -> TokenBuckets | DatabaseBuckets:
    """The buckets a process of this database keeps its event limit in."""
    if engine.dialect.name == "sqlite":
        return TokenBuckets(per_minute, burst)
    return DatabaseBuckets(engine, per_minute, burst)
