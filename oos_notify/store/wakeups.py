"""Telling every worker that the outbox changed, across processes, on PostgreSQL.

A transaction that adds due rows sends ``NOTIFY`` on one channel; PostgreSQL delivers it when the
transaction commits (never on a rollback, and once however many times one transaction sent it).
Each worker listens on a connection of its own and wakes its dispatcher, so a row written by any
replica is claimed within milliseconds instead of at the next sweep. A notification sent while a
listener is reconnecting is lost, so the listener wakes its dispatcher after every (re)connect,
and the periodic sweep stays as the safety net. SQLite has no such channel: there one process
owns the database and wakes its own dispatcher.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy import URL, text
from sqlmodel import Session

log = logging.getLogger(__name__)

CHANNEL = "oos_notify_outbox"
_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', '')")


def announce(session: Session) -> None:
    """Wake the workers of every replica once this transaction commits (PostgreSQL only)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_NOTIFY)


class Listener:
    """Holds one connection on ``LISTEN`` and calls ``wake`` on each notification and after each
    (re)connect; reconnects with a backoff when the connection is lost."""

    def __init__(self, url: URL, wake: Callable[[], None], heartbeat_seconds: float = 10.0) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._wake = wake
        self._heartbeat = heartbeat_seconds
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError) as exc:
                if self.connected.is_set():
                    delay = 0.5
                self.connected.clear()
                reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
                log.warning("outbox listener lost its connection (%s); retrying", reason)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _listen(self) -> None:
        # Keepalives: a peer gone without a word (a host lost, a cable cut) is noticed in ~25 s.
        async with await psycopg.AsyncConnection.connect(
            self._conninfo,
            autocommit=True,
            application_name="oos-notify-listener",
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        ) as connection:
            await connection.execute(f"LISTEN {CHANNEL}")
            self.connected.set()
            self._wake()  # what was committed while nobody listened
            while True:
                async for _ in connection.notifies(timeout=self._heartbeat):
                    self._wake()
                await connection.execute("SELECT 1")  # raises if the connection is gone
