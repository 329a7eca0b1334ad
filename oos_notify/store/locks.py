"""Transactions about the same thing, one at a time, across every process on the database.

Under PostgreSQL's READ COMMITTED each statement sees what was committed when it began: two
requests about one incident could each find no earlier event, and the later one, finding the
incident the first just committed, would answer that it is already open. A transaction-scoped
advisory lock on the incident's reference lines such requests up, and frees itself at commit or
rollback. SQLite needs none: it runs one writer at a time, and the service's write gate orders
them.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlmodel import Session

_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:purpose), hashtext(:key))")


def one_at_a_time(session: Session, purpose: str, key: str) -> None:
    """Wait until no other transaction holds ``purpose``'s lock for ``key``, then hold it until
    this transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_LOCK, {"purpose": purpose, "key": key})
