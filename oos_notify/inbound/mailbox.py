"""Reading the reply domain's mailbox over IMAP: a pass over what is new, then IDLE until the
server says more arrived (or a plain wait where it offers no IDLE).

IMAPClient is blocking, so every call runs on one thread of the reader's own: an IDLE that waits
minutes must not hold one of the threads the database work shares. Each message is processed
and committed first, then marked with a keyword and moved to the processed folder; a crash in
between leaves it in the inbox, where the next pass finds it already recorded (by its place in
the mailbox and its Message-ID) and only moves it. Nothing is ever deleted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, suppress
from functools import partial
from typing import Any, TypeVar

from imapclient import IMAPClient  # type: ignore[import-untyped]
from imapclient.exceptions import IMAPClientError  # type: ignore[import-untyped]
from sqlalchemy.exc import SQLAlchemyError

from oos_notify.inbound.handling import Handled, Intake, NotYetSent, Origin
from oos_notify.inbound.health import IntakeHealth
from oos_notify.settings import ImapSecurity, Settings

log = logging.getLogger(__name__)
_T = TypeVar("_T")

PROCESSED = b"$OOSProcessed"
FAILED = b"$OOSFailed"
"""Keywords on processed messages; the second one marks those that could not be processed."""
IDLE_RENEW_SECONDS = 300.0
"""An IDLE is renewed at least this often: RFC 2177 allows 29 minutes, NAT boxes often less."""
MAX_BACKOFF_SECONDS = 300.0
FETCH_CHUNK = 50
CONNECT_TIMEOUT_SECONDS = 30.0
_EXPECTED = (IMAPClientError, OSError, SQLAlchemyError)


class MailboxReader:
    """Polls one IMAP folder for returned mail, for the life of the service."""

    def __init__(
        self,
        settings: Settings,
        intake: Intake,
        write_gate: AbstractAsyncContextManager[object],
        wake: Callable[[], None] | None,
    ) -> None:
        assert settings.inbound_imap_host is not None
        self._settings = settings
        self._host = settings.inbound_imap_host
        self._port = settings.effective_imap_port
        self._intake = intake
        self._write_gate = write_gate
        self._wake = wake
        self.source = (
            f"imap://{settings.inbound_imap_username}@{self._host}:{self._port}/"
            f"{settings.inbound_imap_folder}"
        )
        self.health = IntakeHealth(f"reading {self.source}")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap")
        self._task: asyncio.Task[None] | None = None
        self._client: IMAPClient | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop after the message being processed; an IDLE in progress is cut short."""
        self._stopping.set()
        client = self._client
        if client is not None:
            with suppress(OSError):
                client.socket().shutdown(socket.SHUT_RDWR)
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _call(self, work: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    async def _run(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                self._client = await self._call(self._connect)
                while not self._stopping.is_set():
                    # Mail that arrives during a pass is announced before IDLE starts, where
                    # IDLE would not see it: read again until a pass finds nothing.
                    while await self._pass(self._client):
                        pass
                    self.health.succeeded()
                    backoff = 1.0
                    await self._wait(self._client)
            except Exception as exc:
                if self._stopping.is_set():
                    break
                self.health.failed(exc)
                log.warning(
                    "reading returned mail from %s failed (%s: %s); trying again in %.0f s",
                    self.source,
                    type(exc).__name__,
                    exc,
                    backoff,
                    # A lost connection or a database blip needs no traceback; anything else may
                    # be a bug.
                    exc_info=None if isinstance(exc, _EXPECTED) else exc,
                )
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            finally:
                client, self._client = self._client, None
                if client is not None:
                    await self._call(_close, client)

    async def _sleep(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _connect(self) -> IMAPClient:
        settings = self._settings
        context = ssl.create_default_context()
        client = IMAPClient(
            self._host,
            port=self._port,
            ssl=settings.inbound_imap_security is ImapSecurity.TLS,
            ssl_context=context,
            timeout=CONNECT_TIMEOUT_SECONDS,
        )
        try:
            if settings.inbound_imap_security is ImapSecurity.STARTTLS:
                client.starttls(context)
            password = settings.inbound_imap_password
            client.login(
                settings.inbound_imap_username or "",
                password.get_secret_value() if password else "",
            )
            processed = settings.inbound_imap_processed_folder
            if not client.folder_exists(processed):
                client.create_folder(processed)
        except BaseException:
            _close(client)
            raise
        return client

    async def _pass(self, client: IMAPClient) -> int:
        """Process everything in the folder not yet marked processed, oldest first; return how
        many were new. A server that can neither keep the keyword nor move a message shows the
        processed ones on every pass: they are not new, so the reader still goes to wait."""
        folder = self._settings.inbound_imap_folder
        selected = await self._call(client.select_folder, folder)
        uidvalidity = int(selected[b"UIDVALIDITY"])
        keywords = b"\\*" in selected.get(b"PERMANENTFLAGS", ())
        criteria = ["NOT", "KEYWORD", PROCESSED.decode()] if keywords else ["ALL"]
        uids = sorted(await self._call(client.search, criteria))
        new = 0
        for start in range(0, len(uids), FETCH_CHUNK):
            chunk = uids[start : start + FETCH_CHUNK]
            sizes = await self._call(client.fetch, chunk, ["RFC822.SIZE"])
            for uid in chunk:
                if self._stopping.is_set():
                    return 0
                if uid not in sizes:
                    continue  # expunged by someone else meanwhile
                size = int(sizes[uid].get(b"RFC822.SIZE", 0))
                try:
                    handled = await self._process(client, uidvalidity, uid, size)
                except NotYetSent:
                    log.info("a bounce came back before its send was recorded; next pass")
                    continue
                await self._call(self._mark, client, uid, handled, keywords)
                new += handled is not None
        return new

    async def _process(
        self, client: IMAPClient, uidvalidity: int, uid: int, size: int
    ) -> Handled | None:
        """Process one message unless it was processed already (then None). The message is
        fetched and read before the turn at the write gate: the gate is for database work
        only."""
        origin = Origin(self.source, uidvalidity, uid)
        if await asyncio.to_thread(self._intake.processed, self.source, uidvalidity, uid):
            return None
        limit = self._settings.inbound_max_message_bytes
        if size > limit:
            refusal = partial(
                self._intake.refuse, origin, f"the message is {size} bytes, over {limit}"
            )
            async with self._write_gate:
                handled = await asyncio.to_thread(refusal)
        else:
            fetched = await self._call(client.fetch, [uid], ["BODY.PEEK[]"])
            raw = fetched[uid][b"BODY[]"]
            reading = await self._intake.read(raw, origin)
            handled = await self._intake.handle_once_sent(raw, origin, reading, self._write_gate)
        if handled.wake and self._wake is not None:
            self._wake()
        return handled

    def _mark(self, client: IMAPClient, uid: int, handled: Handled | None, keywords: bool) -> None:
        """Mark a processed message and move it out of the way: MOVE where the server has it,
        else copy and expunge that one message (UIDPLUS), else the keyword alone."""
        if keywords:
            flags = [PROCESSED, FAILED] if handled is not None and handled.failed else [PROCESSED]
            client.add_flags([uid], flags, silent=True)
        processed = self._settings.inbound_imap_processed_folder
        if client.has_capability("MOVE"):
            client.move([uid], processed)
        elif client.has_capability("UIDPLUS"):
            client.copy([uid], processed)
            client.delete_messages([uid], silent=True)
            client.uid_expunge([uid])

    async def _wait(self, client: IMAPClient) -> None:
        """Until the server says something arrived, or the wait is over."""
        seconds = min(self._settings.inbound_poll_seconds, IDLE_RENEW_SECONDS)
        if not client.has_capability("IDLE"):
            await self._sleep(self._settings.inbound_poll_seconds)
            return
        await self._call(_idle, client, seconds)


def _idle(client: IMAPClient, seconds: float) -> None:
    client.idle()
    try:
        client.idle_check(timeout=seconds)
    finally:
        client.idle_done()


def _close(client: IMAPClient) -> None:
    try:
        client.logout()
    except (IMAPClientError, OSError):
        with suppress(IMAPClientError, OSError):
            client.shutdown()
