"""The database engine and sessions: the single source of truth for everything scheduled."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session, SQLModel, create_engine


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for the URL; SQLite gets WAL and a busy timeout so the API and sender share it."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def create_schema(engine: Engine) -> None:
    """Create missing tables (additive so far; migrations come with the first schema change)."""
    from oos_notify.store import audit, models  # noqa: F401  (models registers the tables)

    SQLModel.metadata.create_all(engine)
    try:
        with engine.begin() as connection:
            audit.start_chain(connection)
    except IntegrityError:
        pass  # another replica, starting at the same moment, started the chain first


def write_gate(engine: Engine) -> AbstractAsyncContextManager[object]:
    """What the service's writers queue on before touching the database.

    SQLite takes one writer at a time and makes the others poll with sleeps, or fail when a
    read snapshot cannot become a write. For SQLite the API and the dispatcher therefore take
    turns on an asyncio lock: waiting costs no worker thread, so a burst of requests cannot
    exhaust the thread pool that the lock's holder needs to finish. PostgreSQL needs no gate.
    """
    return asyncio.Lock() if engine.dialect.name == "sqlite" else _NoGate()


class _NoGate:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
