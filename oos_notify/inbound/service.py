"""Returned mail as one part of the service, started and stopped with it: the mailbox reader
or the SMTP listener the settings choose, over one intake. ``oos-notify serve`` runs it; any
process that has the database and the settings can."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from oos_notify.agreements.config import ConfigProblem
from oos_notify.clock import Clock
from oos_notify.inbound.handling import Intake
from oos_notify.inbound.health import IntakeHealth
from oos_notify.inbound.reading import Reader
from oos_notify.incidents.acknowledgement import AckTokens
from oos_notify.return_addresses import ReturnAddresses
from oos_notify.settings import InboundMode, Settings

if TYPE_CHECKING:
    from oos_notify.inbound.listener import SmtpListener
    from oos_notify.inbound.mailbox import MailboxReader

log = logging.getLogger(__name__)


def problems(settings: Settings) -> list[ConfigProblem]:
    """What the inbound settings lack, each named by its variable."""
    found: list[ConfigProblem] = []

    def missing(name: str, why: str) -> None:
        found.append(ConfigProblem("environment", f"OOS_NOTIFY_{name}", why))

    if settings.inbound is InboundMode.NONE:
        return found
    if settings.reply_domain is None:
        missing("REPLY_DOMAIN", f"required when OOS_NOTIFY_INBOUND={settings.inbound}")
    if settings.inbound is InboundMode.IMAP:
        for name in ("host", "username", "password"):
            if getattr(settings, f"inbound_imap_{name}") is None:
                missing(f"INBOUND_IMAP_{name.upper()}", "required when OOS_NOTIFY_INBOUND=imap")
        if settings.inbound_imap_folder == settings.inbound_imap_processed_folder:
            missing(
                "INBOUND_IMAP_PROCESSED_FOLDER",
                "must differ from OOS_NOTIFY_INBOUND_IMAP_FOLDER",
            )
    return found


def return_addresses(settings: Settings, secret_key: str) -> ReturnAddresses | None:
    """The service's return addresses, or None when no reply domain is set (the feature off)."""
    if settings.reply_domain is None:
        return None
    return ReturnAddresses(secret_key, settings.reply_domain, settings.reply_address_separator)


class InboundMail:
    """Reads returned mail the way the settings say, and processes each message once."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        clock: Clock,
        write_gate: AbstractAsyncContextManager[object],
        addresses: ReturnAddresses,
        tokens: AckTokens,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self._reader = Reader(settings.inbound_max_parse_seconds, settings.inbound_authserv_id)
        self.intake = Intake(
            engine,
            clock,
            addresses,
            tokens,
            settings.mail_domain,
            settings.reply_confirm_words,
            self._reader,
        )
        self._settings = settings
        # The IMAP client and the SMTP server are imported by the process that runs one
        self._part: MailboxReader | SmtpListener
        if settings.inbound is InboundMode.IMAP:
            from oos_notify.inbound.mailbox import MailboxReader

            self._part = MailboxReader(settings, self.intake, write_gate, wake)
        else:
            from oos_notify.inbound.listener import SmtpListener

            self._part = SmtpListener(settings, self.intake, write_gate, wake)

    @property
    def health(self) -> IntakeHealth:
        return self._part.health

    async def start(self) -> None:
        await self._part.start()
        log.info("returned mail: %s", self._part.health.working)
        if self._settings.inbound_authserv_id is None:
            self._part.health.caveat = "no reply confirms: OOS_NOTIFY_INBOUND_AUTHSERV_ID is unset"
            log.warning(
                "OOS_NOTIFY_INBOUND_AUTHSERV_ID is not set: no Authentication-Results are "
                "trusted, so no reply confirms; replies are forwarded to QA as unverified"
            )

    async def stop(self) -> None:
        await self._part.stop()
        await self._reader.close()
