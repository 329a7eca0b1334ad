"""Who is asking: the signed session cookie, the CSRF token every form carries, and the role
a page needs. Each refusal is an exception the console turns into a page (or a 401 for a live
refresh, which then tells the person to sign in again)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from itsdangerous import BadSignature, URLSafeSerializer
from sqlmodel import Session

from oos_notify.settings import Settings
from oos_notify.web.api.deps import ServicesDep, Writer
from oos_notify.web.console import accounts
from oos_notify.web.console.accounts import SignedIn


@dataclass(frozen=True)
class Cookies:
    """How the console's cookies are named, signed and flagged for this deployment."""

    signer: URLSafeSerializer
    secure: bool
    idle: timedelta
    lifetime: timedelta

    @classmethod
    def of(cls, settings: Settings, secret: str) -> Cookies:
        return cls(
            URLSafeSerializer(secret, salt="oos-notify.console.session.v1"),
            settings.uses_https,
            timedelta(minutes=settings.console_idle_minutes),
            timedelta(hours=settings.console_session_hours),
        )

    @property
    def session_name(self) -> str:
        # Over HTTPS the __Host- prefix makes the browser refuse the cookie unless it is Secure,
        # host-only and for the whole site: no subdomain or plain-HTTP page can plant one.
        return "__Host-oos_console" if self.secure else "oos_console"

    @property
    def sign_in_name(self) -> str:
        return "__Host-oos_console_sign_in" if self.secure else "oos_console_sign_in"

    def set_session(self, response: Response, token: str) -> None:
        value = self.signer.dumps(token)
        assert isinstance(value, str)
        self._set(response, self.session_name, value)

    def session_token(self, request: Request) -> str | None:
        raw = request.cookies.get(self.session_name)
        if not raw or len(raw) > 512:
            return None
        try:
            token = self.signer.loads(raw)
        except BadSignature:
            return None
        return token if isinstance(token, str) else None

    def sign_in_token(self, request: Request) -> str | None:
        return request.cookies.get(self.sign_in_name)

    def set_sign_in(self, response: Response, token: str) -> None:
        """The sign-in form's CSRF token: the form echoes it, this cookie holds it."""
        self._set(response, self.sign_in_name, token)

    def _set(self, response: Response, name: str, value: str) -> None:
        response.set_cookie(
            name, value, httponly=True, samesite="strict", secure=self.secure, path="/"
        )

    def clear(self, response: Response, name: str) -> None:
        response.delete_cookie(name, httponly=True, samesite="strict", secure=self.secure, path="/")


def cookies(request: Request) -> Cookies:
    found: Cookies = request.app.state.console_cookies
    return found


CookiesDep = Annotated[Cookies, Depends(cookies)]


class SignInRequired(Exception):
    """No live session: the page sends the person to sign in, and back here afterwards."""

    def __init__(self, back_to: str) -> None:
        self.back_to = back_to
        super().__init__(back_to)


class LiveSignedOut(Exception):
    """A live refresh found the session over; the page's script says so."""


class NotAllowed(Exception):
    """Signed in, but this needs another role, or the form came without its CSRF token."""

    def __init__(self, who: SignedIn | None, title: str, message: str) -> None:
        self.who = who
        self.title = title
        self.message = message
        super().__init__(message)


def _lookup(request: Request, services: ServicesDep, jar: Cookies) -> SignedIn | None:
    token = jar.session_token(request)
    if token is None:
        return None
    with Session(services.engine) as session:
        return accounts.signed_in(session, token, services.clock.now(), jar.idle, jar.lifetime)


async def current_user(request: Request, services: ServicesDep, jar: CookiesDep) -> SignedIn:
    """The signed-in person; asking for a page keeps their session alive."""
    who = await run_in_threadpool(_lookup, request, services, jar)
    if who is None:
        back_to = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(back_to)
    now = services.clock.now()
    if now - who.last_seen_at >= accounts.TOUCH_EVERY:
        await Writer(services).run(lambda session: accounts.touch(session, who.session_id, now))
    return who


UserDep = Annotated[SignedIn, Depends(current_user)]


def live_user(request: Request, services: ServicesDep, jar: CookiesDep) -> SignedIn:
    """The signed-in person, for a live refresh: it does not count as activity, so a page
    left open still signs its person out once they are away for the idle time."""
    who = _lookup(request, services, jar)
    if who is None:
        raise LiveSignedOut()
    return who


LiveUserDep = Annotated[SignedIn, Depends(live_user)]


def checked_form(who: UserDep, csrf_token: Annotated[str, Form()] = "") -> SignedIn:
    """The person, if the form they posted carries their session's CSRF token."""
    if not hmac.compare_digest(csrf_token.encode(), who.csrf_token.encode()):
        raise NotAllowed(
            who,
            "This form cannot be accepted",
            "It came without this session's security token (it may be from another site, or "
            "from a page opened before you signed in again). Nothing was recorded: open the "
            "page again and repeat the action.",
        )
    return who


FormUserDep = Annotated[SignedIn, Depends(checked_form)]


def acting_user(who: FormUserDep) -> SignedIn:
    """The person, if their role may act and their form carries its CSRF token."""
    if not who.role.can_act:
        raise NotAllowed(
            who,
            "Your role can read but not act",
            f"{who.email} has the {who.role} role. Posting follow-ups needs the qa role: "
            "ask the operator (oos-notify user).",
        )
    return who


ActingUserDep = Annotated[SignedIn, Depends(acting_user)]


def sign_in_url(back_to: str) -> str:
    return f"/console/sign-in?next={quote(back_to, safe='/')}"


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console page of this site, never another site."""
    if (
        not value
        or not value.startswith("/console")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x20 for c in value)
    ):
        return "/console"
    return value
