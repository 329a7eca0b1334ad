"""Taking returned mail over SMTP: a listener for the reply domain, behind the organisation's
own mail relay. A recipient that is not a genuine return address is refused at RCPT, so the
listener accepts no spam and sends no backscatter; a message is accepted only once it is
recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from aiosmtpd.smtp import SMTP, Envelope, Session

from oos_notify.inbound.handling import Intake, NotYetSent, Origin
from oos_notify.inbound.health import IntakeHealth
from oos_notify.settings import Settings

log = logging.getLogger(__name__)

SOURCE = "smtp"
NO_SUCH_RECIPIENT = "550 5.1.1 No such recipient here"
TRY_LATER = "451 4.3.0 Cannot record the message now; please try again later"
UNPROCESSABLE = (
    "554 5.6.0 This message could not be processed; to confirm, use the link in the "
    "notification or call the manufacturer's QA contact"
)


class _Handler:
    def __init__(self, listener: SmtpListener) -> None:
        self._listener = listener

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self._listener.intake.accepts(address):
            return NO_SUCH_RECIPIENT
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return await self._listener.receive(envelope)


class SmtpListener:
    """An SMTP server on the service's event loop; each message is processed before it is
    accepted: 250 once recorded, 451 when the database cannot record it or a bounce came back
    before its send was recorded (the relay tries again, nothing is lost), 554 when it cannot be
    processed at all (recorded; the sender is told)."""

    def __init__(
        self,
        settings: Settings,
        intake: Intake,
        write_gate: AbstractAsyncContextManager[object],
        wake: Callable[[], None] | None,
    ) -> None:
        self._settings = settings
        self.intake = intake
        self._write_gate = write_gate
        self._wake = wake
        self._server: asyncio.Server | None = None
        self.health = IntakeHealth(
            f"listening on {settings.inbound_smtp_host}:{settings.inbound_smtp_port}"
        )

    async def start(self) -> None:
        settings = self._settings
        handler = _Handler(self)
        self._server = await asyncio.get_running_loop().create_server(
            lambda: SMTP(
                handler,
                data_size_limit=settings.inbound_max_message_bytes,
                enable_SMTPUTF8=True,
                hostname=settings.reply_domain,
                ident="oos-notify",
            ),
            host=settings.inbound_smtp_host,
            port=settings.inbound_smtp_port,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def receive(self, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        origin = Origin(
            SOURCE,
            envelope_sender=envelope.mail_from,
            envelope_recipients=tuple(envelope.rcpt_tos),
        )
        try:
            # Parsing is the message's own work, done before its turn at the gate: however
            # long a message makes it take, no writer waits for it.
            reading = await self.intake.read(raw, origin)
            handled = await self.intake.handle_once_sent(raw, origin, reading, self._write_gate)
        except NotYetSent:
            log.info("a bounce came back before its send was recorded; the relay will try again")
            return TRY_LATER
        except Exception as exc:
            self.health.failed(exc)
            log.exception("returned mail could not be recorded; the relay will try again")
            return TRY_LATER
        self.health.succeeded()
        if handled.wake and self._wake is not None:
            self._wake()
        return UNPROCESSABLE if handled.failed else "250 OK"
