"""Console accounts: Argon2id password hashes, sessions kept in the database, and sign-in
attempts throttled per account and per client.

An attempt is counted before its password is checked, and counts as a refusal until the check
says otherwise, so a burst of attempts at once cannot check more passwords than the limit
allows; and only ``PASSWORD_CHECKS`` checks run at a time, each taking 64 MiB.

A session is a random token in the browser's cookie and a row keyed by the token's hash here,
so a session can be ended for real (sign-out, a disabled account, a new password) and expires
after inactivity by the service's clock, not the browser's.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import ColumnElement
from sqlmodel import Session, col, select

from oos_notify.addresses import Name
from oos_notify.errors import Conflict, InvalidFields, NotFound
from oos_notify.ids import new_id
from oos_notify.store import audit
from oos_notify.store.locks import one_at_a_time
from oos_notify.store.models import ConsoleSession, ConsoleUser, SignInAttempt
from oos_notify.texts import direction_control
from oos_notify.web.console.roles import MIN_PASSWORD_LENGTH, Role

MAX_PASSWORD_LENGTH = 1024
"""Argon2 hashes any length; the cap only keeps a megabyte 'password' from costing more."""
_NAME: TypeAdapter[str] = TypeAdapter(Name)
_EMAIL = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")

ACCOUNT_FAILURES = 5
"""Refused sign-ins for one address within ``THROTTLE_WINDOW`` before it is throttled."""
CLIENT_FAILURES = 20
"""Refused sign-ins from one client address within ``THROTTLE_WINDOW``, whatever the account."""
THROTTLE_WINDOW = timedelta(minutes=15)
PASSWORD_CHECKS = 2
"""Argon2 checks a process runs at once: each holds 64 MiB for about half a second."""
_COUNTED = ("checking", "refused")
"""Outcomes that count against the limits: refused, or not yet known to be anything else."""
TOUCH_EVERY = timedelta(minutes=1)
"""How stale a session's last-seen time may get before a page view writes it again."""


@cache
def _hasher() -> PasswordHasher:
    # argon2-cffi's defaults are RFC 9106's second recommendation: argon2id, t=3, 64 MiB, p=4.
    return PasswordHasher()


@cache
def _decoy_hash() -> str:
    """What an unknown address is checked against, so a refusal takes as long either way."""
    return _hasher().hash(secrets.token_urlsafe(16))


def normalise_email(email: str) -> str:
    address = email.strip().lower()
    if not _EMAIL.match(address) or len(address) > 254:
        raise InvalidFields([("email", f"{email!r} is not an email address", "invalid_email")])
    turning = direction_control(address)
    if turning is not None:
        raise InvalidFields(
            [
                (
                    "email",
                    "must not contain characters that change the direction of text; "
                    f"it contains U+{ord(turning):04X}",
                    "invalid_email",
                )
            ]
        )
    return address


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidFields(
            [
                (
                    "password",
                    f"at least {MIN_PASSWORD_LENGTH} characters, please",
                    "password_too_short",
                )
            ]
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidFields(
            [("password", f"at most {MAX_PASSWORD_LENGTH} characters", "password_too_long")]
        )


def new_password() -> str:
    """A password to hand over once: 20 characters from an unambiguous alphabet (~115 bits)."""
    alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(20))


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def password_matches(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` is the one hashed; an absent hash costs the same time and says no.
    Slow on purpose (tens of milliseconds): call it off the event loop."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        _hasher().verify(password_hash or _decoy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return password_hash is not None


# --- accounts (``oos-notify user ...``) -----------------------------------------------------


def find_user(session: Session, email: str) -> ConsoleUser | None:
    return session.exec(
        select(ConsoleUser).where(ConsoleUser.email == email.strip().lower())
    ).first()


def _existing(session: Session, email: str) -> ConsoleUser:
    user = find_user(session, email)
    if user is None:
        raise NotFound(f"no console user {email.strip().lower()!r}")
    return user


def person_name(name: str) -> str:
    """The name printed on what the account's person signs: one line, no header tricks."""
    try:
        return _NAME.validate_python(name.strip())
    except ValidationError as error:
        reason = error.errors()[0]["msg"]
        raise InvalidFields([("name", reason, "invalid_name")]) from None


def create_user(
    session: Session,
    email: str,
    role: Role,
    password: str,
    now: datetime,
    name: str | None = None,
) -> ConsoleUser:
    address = normalise_email(email)
    check_password(password)
    printed = person_name(name) if name is not None else None
    if find_user(session, address) is not None:
        raise Conflict(f"a console user {address!r} exists already")
    user = ConsoleUser(
        id=new_id("usr"),
        email=address,
        role=role.value,
        name=printed,
        password_hash=hash_password(password),
        created_at=now,
        password_changed_at=now,
    )
    session.add(user)
    audit.record(
        session,
        now,
        "console_user_created",
        "operator",
        email=address,
        role=role.value,
        name=printed,
    )
    return user


def set_name(session: Session, email: str, name: str, now: datetime) -> None:
    """Set the name printed on what the account's person signs; the change is audited, and
    what they signed before keeps the name it was signed with."""
    printed = person_name(name)
    user = _existing(session, email)
    if user.name != printed:
        audit.record(
            session,
            now,
            "console_user_named",
            "operator",
            email=user.email,
            name_from=user.name,
            name_to=printed,
        )
        user.name = printed
        session.add(user)


def list_users(session: Session) -> list[ConsoleUser]:
    return list(session.exec(select(ConsoleUser).order_by(col(ConsoleUser.email))).all())


def disable_user(session: Session, email: str, now: datetime) -> None:
    """Disable the account and end its sessions at once."""
    user = _existing(session, email)
    if user.disabled_at is None:
        user.disabled_at = now
        session.add(user)
        ended = _end_sessions(session, user, now)
        audit.record(
            session, now, "console_user_disabled", "operator", email=user.email, sessions=ended
        )


def enable_user(session: Session, email: str, now: datetime) -> None:
    user = _existing(session, email)
    if user.disabled_at is not None:
        user.disabled_at = None
        session.add(user)
        audit.record(session, now, "console_user_enabled", "operator", email=user.email)


def reset_password(session: Session, email: str, password: str, now: datetime) -> None:
    """Set a new password and end the account's sessions: whoever knew the old one is out."""
    check_password(password)
    user = _existing(session, email)
    user.password_hash = hash_password(password)
    user.password_changed_at = now
    session.add(user)
    ended = _end_sessions(session, user, now)
    audit.record(
        session, now, "console_password_reset", "operator", email=user.email, sessions=ended
    )


def _end_sessions(session: Session, user: ConsoleUser, now: datetime) -> int:
    rows = session.exec(
        select(ConsoleSession).where(
            ConsoleSession.user_id == user.id, col(ConsoleSession.ended_at).is_(None)
        )
    ).all()
    for row in rows:
        row.ended_at = now
        session.add(row)
    return len(rows)


# --- signing in -------------------------------------------------------------------------------


def throttled_for(session: Session, email: str, client: str, now: datetime) -> int | None:
    """Seconds until ``email`` from ``client`` may try again, or None if it may now.

    Only refusals count, and attempts still being checked: a throttled attempt checked no
    password. The wait ends when enough refusals have left the window to bring the count under
    its limit.
    """
    since = now - THROTTLE_WINDOW
    waits = [
        _wait(session, col(SignInAttempt.email) == email, ACCOUNT_FAILURES, since),
        _wait(session, col(SignInAttempt.client_address) == client, CLIENT_FAILURES, since),
    ]
    longest = max((w for w in waits if w is not None), default=None)
    if longest is None:
        return None
    return max(1, int((longest + THROTTLE_WINDOW - now).total_seconds() + 0.999))


def _wait(
    session: Session, who: ColumnElement[bool], limit: int, since: datetime
) -> datetime | None:
    """The refusal that must leave the window before ``who`` may try again, if any."""
    refusals = session.exec(
        select(SignInAttempt.at)
        .where(who, col(SignInAttempt.outcome).in_(_COUNTED), col(SignInAttempt.at) > since)
        .order_by(col(SignInAttempt.at).desc())
        .limit(limit)
    ).all()
    return refusals[-1] if len(refusals) >= limit else None


def record_attempt(
    session: Session, email: str, client: str, outcome: str, now: datetime
) -> SignInAttempt:
    attempt = SignInAttempt(at=now, email=email[:254], client_address=client, outcome=outcome)
    session.add(attempt)
    return attempt


def reserve_attempt(
    session: Session, email: str, client: str, now: datetime
) -> tuple[int | None, int | None]:
    """Count an attempt before its password is checked: ``(None, attempt id)`` if it may be
    checked, else ``(seconds to wait, None)``, recorded as throttled.

    Attempts for the account and from the client are counted one transaction at a time, across
    processes too (the account's lock first, then the client's, so that none waits in a
    circle): two attempts at once cannot both find the last place under the limit."""
    one_at_a_time(session, "console sign-in account", email)
    one_at_a_time(session, "console sign-in client", client)
    wait = throttled_for(session, email, client, now)
    if wait is not None:
        record_attempt(session, email, client, "throttled", now)
        return wait, None
    attempt = record_attempt(session, email, client, "checking", now)
    session.flush()
    return None, attempt.id


def settle_attempt(session: Session, attempt_id: int, outcome: str) -> None:
    """Record what the check of a reserved attempt found: ``signed_in`` or ``refused``."""
    attempt = session.get(SignInAttempt, attempt_id)
    if attempt is not None:
        attempt.outcome = outcome
        session.add(attempt)


def session_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(
    session: Session,
    user: ConsoleUser,
    now: datetime,
    *,
    client: str,
    user_agent: str | None,
    password: str,
) -> str:
    """Open a session for a user whose password was just checked; return the cookie's token.
    A hash made with weaker parameters than today's is replaced while the password is at hand."""
    token = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            id=session_key(token),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            client_address=client,
            user_agent=(user_agent or "")[:300] or None,
        )
    )
    if _hasher().check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        session.add(user)
    audit.record(session, now, "console_signed_in", user.email, role=user.role, client=client)
    return token


@dataclass(frozen=True)
class SignedIn:
    """Who is asking, through which session."""

    user_id: str
    email: str
    role: Role
    session_id: str
    csrf_token: str
    last_seen_at: datetime


def signed_in(
    session: Session, token: str, now: datetime, idle: timedelta, lifetime: timedelta
) -> SignedIn | None:
    """The live session a cookie's token names, or None: ended, idle too long, too old, begun
    before the password changed, or its account disabled."""
    row = session.exec(
        select(ConsoleSession, ConsoleUser)
        .join(ConsoleUser, col(ConsoleUser.id) == col(ConsoleSession.user_id))
        .where(ConsoleSession.id == session_key(token))
    ).first()
    if row is None:
        return None
    live, user = row
    if (
        live.ended_at is not None
        or user.disabled_at is not None
        or live.created_at < user.password_changed_at
        or now - live.last_seen_at > idle
        or now - live.created_at > lifetime
    ):
        return None
    return SignedIn(
        user.id, user.email, Role(user.role), live.id, live.csrf_token, live.last_seen_at
    )


def touch(session: Session, session_id: str, now: datetime) -> None:
    live = session.get(ConsoleSession, session_id)
    if live is not None and live.ended_at is None:
        live.last_seen_at = now
        session.add(live)


def end_session(session: Session, who: SignedIn, now: datetime) -> None:
    live = session.get(ConsoleSession, who.session_id)
    if live is not None and live.ended_at is None:
        live.ended_at = now
        session.add(live)
        audit.record(session, now, "console_signed_out", who.email)
