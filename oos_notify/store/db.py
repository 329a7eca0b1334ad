"""The database engine and sessions: the single source of truth for everything scheduled."""

from __future__ import annotations

import select
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, Connection, Table, create_engine, event, make_url
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from oos_notify.store import outages, wakeups
from oos_notify.store.turns import WriteGate

if TYPE_CHECKING:
    from sqlmodel import Session

    from oos_notify.store.migrate import Upgraded

# The ORM (SQLModel, the models) and each database's dialect are imported where they are used,
# not here: `oos-notify db upgrade` with nothing to do needs neither, and importing them took
# longer than the rest of its run.

CONNECT_TIMEOUT_SECONDS = 5
"""How long opening a PostgreSQL connection may take: a server that is gone without refusing
(a host lost, a firewall dropping packets) is then a 503 in seconds, not a request that hangs."""


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _found_closed(
    dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """Hand out no pooled PostgreSQL connection that the server has closed, without a round trip.

    An idle connection has nothing to read unless the server ended it: a server stopped or
    restarted tells each session so (``terminating connection``) and closes it, so its socket
    turns readable. Such a connection, and with it every other one pooled before it, is replaced
    at once; the request gets a fresh one, or finds the database unreachable. A ping before each
    checkout (``pool_pre_ping``) found the same, at the cost of a round trip on every checkout:
    five per event."""
    if dbapi_connection.closed:
        raise sa_exc.InvalidatePoolError("connection closed")
    poll = select.poll()
    poll.register(dbapi_connection.fileno(), select.POLLIN)
    if poll.poll(0):
        raise sa_exc.InvalidatePoolError("the server ended the idle connection")


def database_url(url: str) -> URL:
    """The URL with its driver made explicit: ``postgresql://`` means psycopg 3, the driver the
    service ships with (SQLAlchemy alone would look for psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str) -> Engine:
    """An engine for the URL; SQLite gets WAL and a busy timeout so the API and sender share it.
    Its ``availability`` follows every connection it opens."""
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(
            parsed,
            connect_args={
                "application_name": "oos-notify",
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            },
        )
        event.listen(engine, "checkout", _found_closed)
    outages.availability(engine)
    return engine


class SchemaNotReady(Exception):
    """The database's schema is not the one this code needs, and this process may not change it."""


def create_schema(engine: Engine) -> Upgraded:
    """Bring the schema to the newest revision whatever it is now, and start the audit chain:
    for tests, scratch databases and ``oos-notify db upgrade``. Says what it changed."""
    from oos_notify.store import migrate

    done = migrate.upgrade(engine)
    _start_chain(engine)
    return done


def open_schema(engine: Engine, migrate_on_start: bool | None) -> str | None:
    """At start-up: the schema as this code needs it (see ``migrate.prepare``, which raises
    SchemaNotReady when it may not change it), and the audit chain started. Returns what was
    changed, if anything."""
    from oos_notify.store import migrate

    done = migrate.prepare(engine, migrate_on_start)
    _start_chain(engine)
    return done


def _start_chain(engine: Engine) -> None:
    from oos_notify.store import audit

    with engine.begin() as connection:
        audit.start_chain(connection)


def insert_missing(
    connection: Connection | Session, table: Table, rows: list[dict[str, Any]]
) -> None:
    """Insert the rows whose key is not in the table yet and leave the others as they are, in one
    statement: replicas starting together may write the same rows, and none of them fails."""
    if rows:
        connection.execute(_insert(connection, table).on_conflict_do_nothing(), rows)


def upsert(connection: Connection | Session, table: Table, row: dict[str, Any]) -> None:
    """Insert the row, or overwrite the one with its primary key, in one statement."""
    keys = [column.name for column in table.primary_key.columns]
    statement = _insert(connection, table)
    changed = {name: statement.excluded[name] for name in row if name not in keys}
    connection.execute(statement.on_conflict_do_update(index_elements=keys, set_=changed), row)


def _insert(connection: Connection | Session, table: Table) -> Any:
    bind = connection if isinstance(connection, Connection) else connection.get_bind()
    dialect = bind.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    raise NotImplementedError(f"no insert-or-ignore for {dialect}")


def write_gate(engine: Engine) -> AbstractAsyncContextManager[object]:
    """What the service's writers queue on before touching the database.

    SQLite takes one writer at a time and makes the others poll with sleeps, or fail when a
    read snapshot cannot become a write. For SQLite the API and the dispatcher therefore take
    turns on an asyncio lock (the dispatcher's turns first: ``turns``): waiting costs no worker
    thread, so a burst of requests cannot exhaust the thread pool that the lock's holder needs
    to finish. PostgreSQL needs no gate.
    """
    return WriteGate() if engine.dialect.name == "sqlite" else _NoGate()


class _NoGate:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


@contextmanager
def reads(engine: Engine) -> Iterator[Session]:
    """A session for a few reads that need no snapshot in common. On PostgreSQL each statement
    runs on its own (autocommit): no BEGIN and ROLLBACK round trips around them."""
    from sqlmodel import Session

    if engine.dialect.name != "postgresql":
        with Session(engine) as session:
            yield session
        return
    with (
        engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection,
        Session(connection) as session,
    ):
        yield session


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on any error; the workers
    are woken afterwards if it added due notifications (``wakeups.announce``)."""
    from sqlmodel import Session

    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
    wakeups.send_if_announced(session, engine)
