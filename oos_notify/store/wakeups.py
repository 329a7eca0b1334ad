"""Telling every worker that the outbox changed, across processes, on PostgreSQL.

A transaction that adds due rows asks for a ``NOTIFY`` on one channel, which is sent in a
transaction of its own as soon as it has committed. Each worker listens on a connection of its
own and wakes its dispatcher, so a row written by any replica is claimed within milliseconds
instead of at the next sweep. The NOTIFY is not sent inside the writing transaction: PostgreSQL
serialises the commits of all transactions that notify on one lock of the whole database, and a
writer waiting there still held its other locks (the audit chain's head among them), so every
writer of every process queued behind each other (the benchmark saw it). A notification lost (a
process killed between its commit and the NOTIFY, a listener reconnecting) is covered by the
periodic sweep, and the listener wakes its dispatcher after every (re)connect. SQLite has no
such channel: there one process owns the database and wakes its own dispatcher.

The listener is also how a worker hears that the database is back after an outage: it retries
at least twice a second, and its first connection wakes the dispatcher, which records what it did
meanwhile and sends what became due.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import URL, Engine, text

from oos_notify.store.outages import Availability, unreachable

if TYPE_CHECKING:
    from sqlmodel import Session

log = logging.getLogger(__name__)

CHANNEL = "oos_notify_outbox"
_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', '')")
HEARTBEAT_SECONDS = 10.0
"""How long a listener waits in silence before it checks that its connection is still there."""
RECONNECT_SECONDS = (0.1, 0.25, 0.5)
"""How long a listener waits before each try to connect again: at most half a second, so that
the workers hear within a second that the database is back (a refused try costs little)."""


_ANNOUNCE = "oos_notify.wakeups.announce"


def announce(session: Session) -> None:
    """Wake the workers of every replica once this transaction has committed (PostgreSQL only;
    ``store.db.transaction`` sends it)."""
    if session.get_bind().dialect.name == "postgresql":
        session.info[_ANNOUNCE] = True


def send_if_announced(session: Session, engine: Engine) -> None:
    """After a committed transaction that asked for it, and once its connection has gone back to
    the pool (a second one held meanwhile could empty the pool), send the NOTIFY."""
    if not session.info.pop(_ANNOUNCE, False):
        return
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(_NOTIFY)
    except Exception as exc:
        if not unreachable(exc):  # an outage is logged once, by the engine's availability
            log.exception("could not wake the workers: the sweep will find the rows")


class Listener:
    """Holds one connection on ``LISTEN`` and calls ``wake`` on each notification and after each
    (re)connect; reconnects within a second when the connection is lost. An unreachable
    database is reported to ``availability``, which logs the outage once."""

    def __init__(self, url: URL, wake: Callable[[], None], availability: Availability) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._wake = wake
        self._availability = availability
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        import psycopg  # only a worker on PostgreSQL listens: SQLite processes never load it

        tries = 0
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError) as exc:
                if self.connected.is_set():
                    tries = 0
                self.connected.clear()
                if isinstance(exc, OSError) or unreachable(exc):
                    self._availability.lost(exc)
                else:
                    reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
                    log.warning("outbox listener failed (%s); retrying", reason)
                await asyncio.sleep(RECONNECT_SECONDS[min(tries, len(RECONNECT_SECONDS) - 1)])
                tries += 1

    async def _listen(self) -> None:
        import psycopg

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
            self._availability.answered()
            self._wake()  # what was committed while nobody listened
            while True:
                async for _ in connection.notifies(timeout=HEARTBEAT_SECONDS):
                    self._wake()
                await connection.execute("SELECT 1")  # raises if the connection is gone
