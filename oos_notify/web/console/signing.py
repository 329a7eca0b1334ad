"""Signing in the console: the person re-enters their password at each signing (21 CFR
11.200(a)(1)(ii)), checked as at sign-in (``accounts``), and the account's name is printed on
the signature. A wrong password signs nothing and counts against the account's sign-in limits,
as a refused sign-in does."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from oos_notify.errors import ServiceError
from oos_notify.incidents.decisions import Signer
from oos_notify.store.models import ConsoleUser
from oos_notify.web.api.deps import Writer
from oos_notify.web.console import accounts
from oos_notify.web.console.accounts import SignedIn
from oos_notify.web.services import Services

log = logging.getLogger(__name__)


class NotSigned(ServiceError):
    """A signing refused before anything was recorded: the message says why and what to do."""

    def __init__(self, status_code: int, message: str, retry_after: int | None = None) -> None:
        self.status_code = status_code
        self.retry_after = retry_after
        super().__init__(message)


async def password_signer(
    request: Request, who: SignedIn, password: str, services: Services
) -> Signer:
    """The signer, once the password re-entered at this signing is the account's own."""
    writer = Writer(services)
    user = await writer.run(lambda session: session.get(ConsoleUser, who.user_id))
    if user is None or user.disabled_at is not None:
        raise NotSigned(403, "This account is disabled: it cannot sign.")
    if not user.name:
        raise NotSigned(
            409,
            f"{who.email} has no name to print on a signature. Nothing was recorded: ask the "
            f"operator to set it (oos-notify user set-name {who.email} --name ...).",
        )
    if not password:
        raise NotSigned(
            422, "Enter your password to sign: it is your signature. Nothing was recorded."
        )
    client = request.client.host if request.client else "unknown"
    now = services.clock.now()
    wait, attempt = await writer.run(
        lambda session: accounts.reserve_attempt(session, who.email, client, now)
    )
    if attempt is None:
        assert wait is not None
        raise NotSigned(
            429,
            "Too many wrong passwords for this account. Nothing was recorded: try again in "
            f"{max(1, round(wait / 60))} min.",
            retry_after=wait,
        )
    async with services.password_checks:
        matches = await run_in_threadpool(accounts.password_matches, user.password_hash, password)
    outcome = "signed" if matches else "refused"
    await writer.run(lambda session: accounts.settle_attempt(session, attempt, outcome))
    if not matches:
        log.info("console signature refused: wrong password", extra={"client": client})
        raise NotSigned(
            401,
            "That is not your password, so nothing was signed and nothing was recorded. "
            "Enter your own console password to sign.",
        )
    return Signer(email=user.email, printed_name=user.name)
