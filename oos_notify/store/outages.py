"""Telling "the database is unreachable" from every other database error, and following it per
process: while the database is away, requests are answered 503, metrics that need it are left
out, and the dispatcher keeps what it could not record; one log line says when an outage began
and one when it ended."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
"""What a request refused while the database is unreachable is told to wait (``Retry-After``)."""
_SERVER_GONE = frozenset({"57P01", "57P02", "57P03"})
"""PostgreSQL's admin shutdown, crash shutdown and "cannot connect now" (starting or stopping);
class 08 (connection exceptions) is matched as a whole."""
_FILE_GONE = frozenset({sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR})


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says that the database cannot be reached now: no server, a connection
    lost or refused, a server shutting down or starting, a SQLite file that cannot be opened or
    read, no pooled connection free in time. Not a statement the database refused (a constraint,
    a lock, a bug): those are errors of their own and stay so."""
    if isinstance(exc, sa_exc.TimeoutError):  # the pool's, not a statement's
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return unreachable(exc.orig) if isinstance(exc.orig, BaseException) else False
    if type(exc).__module__.startswith("psycopg"):
        # Imported here: psycopg raised exc, so it is loaded; a process on SQLite never loads it.
        import psycopg

        if isinstance(exc, psycopg.OperationalError) and not isinstance(
            exc, psycopg.errors.PipelineAborted
        ):
            # No SQLSTATE: the client found no server or lost it (refused, timed out, closed).
            state = exc.sqlstate
            return state is None or state.startswith("08") or state in _SERVER_GONE
        return False
    if isinstance(exc, sqlite3.OperationalError):
        return exc.sqlite_errorcode & 0xFF in _FILE_GONE
    return False


def describe_outage(exc: BaseException) -> str:
    """What an unreachable database's error says, on one line and without the statement."""
    cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__


class Availability:
    """Whether the database answered this process last time it was tried, and when that
    changed. Each change is logged once: an outage writes one line when it starts and one when
    it ends, whatever the requests, runs and listeners that met it meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lost_at: float | None = None
        self._back_at: float | None = None

    @property
    def up(self) -> bool:
        return self._lost_at is None

    def lost(self, exc: BaseException) -> None:
        """The database could not be reached (``exc`` says why)."""
        with self._lock:
            if self._lost_at is not None:
                return
            self._lost_at = time.monotonic()
        log.warning(
            "database unreachable (%s): requests get 503 and sending waits until it is back",
            describe_outage(exc),
        )

    def answered(self) -> None:
        """A connection to the database was made or found working."""
        if self._lost_at is None:  # the common case, without taking the lock
            return
        with self._lock:
            if self._lost_at is None:
                return
            now = time.monotonic()
            away, self._lost_at, self._back_at = now - self._lost_at, None, now
        log.warning("database reachable again after %.1f s", away)

    def back_within(self, seconds: float) -> bool:
        """Whether the database came back from an outage less than ``seconds`` ago."""
        back_at = self._back_at
        return self.up and back_at is not None and time.monotonic() - back_at < seconds


_availabilities: weakref.WeakKeyDictionary[Engine, Availability] = weakref.WeakKeyDictionary()
_availabilities_lock = threading.Lock()


def availability(engine: Engine) -> Availability:
    """The availability of ``engine``'s database, as its connections found it: an error that
    says it is unreachable marks it lost, a connection handed out (checked first, on PostgreSQL)
    marks it back."""
    with _availabilities_lock:
        found = _availabilities.get(engine)
        if found is None:
            found = _availabilities[engine] = Availability()
            _follow(engine, found)
        return found


def _follow(engine: Engine, found: Availability) -> None:
    def on_error(context: ExceptionContext) -> None:
        # A pooled connection that fails its check is replaced at once; only the replacement's
        # failure says the database is away.
        error = context.sqlalchemy_exception or context.original_exception
        if not context.is_pre_ping and unreachable(error):
            found.lost(error)

    def on_checkout(
        _dbapi: Any, _record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        found.answered()

    event.listen(engine, "handle_error", on_error)
    event.listen(engine, "checkout", on_checkout)
