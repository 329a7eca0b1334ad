"""A real SMTP server on loopback that fails the way mail servers fail, when a test says so.

It is aiosmtpd with scripted answers: a test switches it off (connections refused) and on again
on the same port, and lists the faults it should answer with — a reply code at MAIL, RCPT or DATA
(``421``, ``451``, ``550``...), for one recipient or for everyone, or a delay before answering
DATA that outlasts the client's timeout. What it accepts it keeps, as the capture server does.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from oos_notify.delivery.capture import CaptureHandler, free_port


@dataclass(frozen=True)
class Fault:
    """One scripted answer at ``stage`` (``MAIL``, ``RCPT`` or ``DATA``).

    ``recipient`` limits it to one address (``None``: every message). ``reply`` replaces the
    server's answer (``None``: answer normally); ``delay`` seconds pass before answering.
    """

    stage: str
    reply: str | None = None
    recipient: str | None = None
    delay: float = 0.0


class FaultHandler(CaptureHandler):
    """Answers with the first matching fault; otherwise accepts and keeps the message."""

    def __init__(self) -> None:
        super().__init__(keep=100_000)
        self._faults: list[Fault] = []
        self._faults_lock = threading.Lock()
        self.data_begun = threading.Event()
        """Set once a message's DATA has arrived: a test can act while the reply is pending."""
        self.sessions_opened = 0
        """Sessions that said EHLO: how many connections the client opened."""
        self.sessions_quit = 0

    def set_faults(self, *faults: Fault) -> None:
        with self._faults_lock:
            self._faults = list(faults)

    def _fault(self, stage: str, recipients: list[str]) -> Fault | None:
        with self._faults_lock:
            return next(
                (
                    f
                    for f in self._faults
                    if f.stage == stage and (f.recipient is None or f.recipient in recipients)
                ),
                None,
            )

    async def _scripted(self, stage: str, recipients: list[str]) -> str | None:
        fault = self._fault(stage, recipients)
        if fault is None:
            return None
        if fault.delay:
            await asyncio.sleep(fault.delay)
        return fault.reply

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> Any:
        self.sessions_opened += 1
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        return responses

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.sessions_quit += 1
        return "221 Bye"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = await self._scripted("MAIL", [])
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = await self._scripted("RCPT", [address])
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_begun.set()
        reply = await self._scripted("DATA", list(envelope.rcpt_tos))
        if reply is not None:
            return reply
        return await super().handle_DATA(server, session, envelope)


class FaultySmtpServer:
    """The fault handler served on one loopback port that survives being switched off and on."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.handler = FaultHandler()
        self.host = host
        self.port = free_port(host)
        self._controller: Controller | None = None

    @property
    def is_up(self) -> bool:
        return self._controller is not None

    def up(self) -> FaultySmtpServer:
        if self._controller is None:
            self._controller = Controller(
                self.handler, hostname=self.host, port=self.port, ready_timeout=30
            )
            self._controller.start()
        return self

    def down(self) -> None:
        """Stop listening and drop every open connection: clients get 'connection refused'."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> FaultySmtpServer:
        return self.up()

    def __exit__(self, *exc: Any) -> None:
        self.down()
