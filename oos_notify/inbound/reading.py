"""Reading a returned mail before anything is written: parsed once, in a process of its own,
within a time limit.

Parsing is CPU work on text a stranger wrote. Done at the write gate it would hold every other
writer (the API, the dispatcher) for as long as the message makes it last, and a thread cannot
be stopped. So a message is parsed and classified in a child process, outside any lock, one at
a time; a message that takes longer than ``OOS_NOTIFY_INBOUND_MAX_PARSE_SECONDS`` is stopped
with its process, which is started afresh for the next message. A message whose text part is
over ``MAX_BODY_BYTES`` is not read at all.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from oos_notify.inbound.classify import Returned, classify_message, header_values, parse
from oos_notify.inbound.reply_text import BodyTooLarge

log = logging.getLogger(__name__)

RECIPIENT_HEADERS = (
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "To",
    "Cc",
)
"""Where a mailbox shows the address a message came to, most trustworthy first."""
START_SECONDS = 60.0
"""How long the reader process may take to start (imports on a busy machine); not counted in
a message's time."""


@dataclass(frozen=True)
class Reading:
    """A message as read: what it is and where a mailbox says it went, or why it could not
    be read."""

    returned: Returned | None
    recipients: tuple[str, ...] = ()
    """The values of ``RECIPIENT_HEADERS``, in that order."""
    error: str | None = None


def read(raw: bytes, envelope_sender: str | None, authserv_id: str | None) -> Reading:
    """Parse ``raw`` once and classify it; a message too large or too broken to read gives its
    error instead."""
    try:
        message = parse(raw)
        returned = classify_message(message, envelope_sender, authserv_id)
        recipients = tuple(v for name in RECIPIENT_HEADERS for v in header_values(message, name))
    except BodyTooLarge as exc:
        return Reading(None, error=str(exc))
    except Exception as exc:
        return Reading(None, error=f"{type(exc).__name__}: {exc}")
    return Reading(returned, recipients)


def _serve(connection: Connection, authserv_id: str | None) -> None:
    """The reader process: read each message sent, answer with its reading; None ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service stops it, not a terminal's ^C
    connection.send("ready")
    while True:
        try:
            work = connection.recv()
        except EOFError:
            return
        if work is None:
            return
        raw, envelope_sender = work
        connection.send(read(raw, envelope_sender, authserv_id))


class Reader:
    """Reads messages in a child process, one at a time, each within ``seconds``. Messages
    waiting their turn wait on the reader's own thread, never on threads the database work
    shares."""

    def __init__(self, seconds: float, authserv_id: str | None) -> None:
        self._seconds = seconds
        self._authserv_id = authserv_id
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mail-reader")
        self._child: tuple[BaseProcess, Connection] | None = None

    async def read(self, raw: bytes, envelope_sender: str | None) -> Reading:
        """The message's reading; a message that takes longer than the limit, or ends the
        process, gives an error reading."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._read, raw, envelope_sender)

    async def close(self) -> None:
        """Stop the reader process, if one runs, after the message being read."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._stop)
        self._thread.shutdown()

    def _read(self, raw: bytes, envelope_sender: str | None) -> Reading:
        _, connection = self._started()
        try:
            connection.send((raw, envelope_sender))
            if connection.poll(self._seconds):
                answer = connection.recv()
                assert isinstance(answer, Reading)
                return answer
            error = f"reading it took longer than {self._seconds:g} s"
        except (EOFError, OSError) as exc:
            error = f"the reader process ended while reading it ({type(exc).__name__})"
        self._stop()
        return Reading(None, error=error)

    def _started(self) -> tuple[BaseProcess, Connection]:
        if self._child is not None and self._child[0].is_alive():
            return self._child
        self._stop()
        context = multiprocessing.get_context("spawn")
        connection, child_end = context.Pipe()
        process = context.Process(
            target=_serve,
            args=(child_end, self._authserv_id),
            name="oos-notify mail reader",
            daemon=True,
        )
        process.start()
        child_end.close()
        self._child = (process, connection)
        if not connection.poll(START_SECONDS) or connection.recv() != "ready":
            self._stop()
            raise RuntimeError(f"the mail reader process did not start in {START_SECONDS:g} s")
        return self._child

    def _stop(self) -> None:
        if self._child is None:
            return
        process, connection = self._child
        self._child = None
        process.kill()
        process.join()
        connection.close()
