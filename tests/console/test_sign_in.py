"""Signing in and out of the console: Argon2 passwords, the session cookie's flags, CSRF on
every form, inactivity expiry by the service's clock, and guessing throttled."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest
from sqlmodel import Session, col, select

from oos_notify.clock import ManualClock
from oos_notify.store.models import AuditEntry, ConsoleUser, SignInAttempt
from oos_notify.web.console import accounts
from tests.conftest import RunningService
from tests.console.conftest import PASSWORD, People, browser, csrf_token, sign_in


async def test_a_person_signs_in_sees_the_board_and_signs_out(
    service: RunningService, people: People
) -> None:
    async with browser(service) as client:
        page = await client.get("/console/incidents/inc_X")
        assert page.status_code == 303
        assert page.headers["location"] == "/console/sign-in?next=/console/incidents/inc_X"

        signed = await sign_in(client, people.qa, next_url="/console")
        assert signed.status_code == 303 and signed.headers["location"] == "/console"
        cookie = signed.headers["set-cookie"]
        assert "oos_console=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Secure" not in cookie  # the base URL is http here

        board = await client.get("/console")
        assert board.status_code == 200
        assert "Open incidents" in board.text and people.qa in board.text
        assert "script-src 'self'" in board.headers["content-security-policy"]

        out = await client.post("/console/sign-out", data={"csrf_token": csrf_token(board)})
        assert out.status_code == 303
        assert (await client.get("/console")).status_code == 303

    with Session(service.services.engine) as session:
        actions = [
            (e.action, e.actor)
            for e in session.exec(
                select(AuditEntry)
                .where(AuditEntry.actor == people.qa)
                .order_by(col(AuditEntry.seq))
            )
        ]
    assert actions == [("console_signed_in", people.qa), ("console_signed_out", people.qa)]


async def test_the_password_is_stored_as_an_argon2id_hash(
    service: RunningService, people: People
) -> None:
    with Session(service.services.engine) as session:
        user = session.exec(select(ConsoleUser).where(ConsoleUser.email == people.qa)).one()
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


async def test_a_wrong_password_is_refused(service: RunningService, people: People) -> None:
    async with browser(service) as client:
        refused = await sign_in(client, people.qa, "not the password")
        assert refused.status_code == 401
        assert "Email or password is wrong" in refused.text
        assert (await client.get("/console")).status_code == 303


async def test_a_sign_in_without_the_forms_token_is_refused(
    service: RunningService, people: People
) -> None:
    async with browser(service) as client:
        refused = await client.post(
            "/console/sign-in", data={"email": people.qa, "password": PASSWORD}
        )
        assert refused.status_code == 403
        assert "expired" in refused.text
        assert (await client.get("/console")).status_code == 303


async def test_a_session_ends_after_the_idle_time(
    service: RunningService, people: People, clock: ManualClock
) -> None:
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        clock.advance(timedelta(minutes=29))
        assert (await client.get("/console")).status_code == 200
        clock.advance(timedelta(minutes=29))  # active 29 min ago: still in
        assert (await client.get("/console")).status_code == 200
        # A live refresh is not activity: the page left open does not keep the session alive.
        clock.advance(timedelta(minutes=20))
        assert (await client.get("/console/board/rows")).status_code == 200
        clock.advance(timedelta(minutes=11))
        assert (await client.get("/console/board/rows")).status_code == 401
        assert (await client.get("/console")).status_code == 303


async def test_signing_in_is_throttled_per_account(
    service: RunningService, people: People, clock: ManualClock
) -> None:
    async with browser(service) as client:
        for _ in range(5):
            assert (await sign_in(client, people.qa, "guess")).status_code == 401
        throttled = await sign_in(client, people.qa)  # even the right password waits now
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) == 15 * 60
        assert "Too many failed sign-ins" in throttled.text
        other = await sign_in(client, people.viewer)  # another account from the same client
        assert other.status_code == 303
        clock.advance(timedelta(minutes=15, seconds=1))
        assert (await sign_in(client, people.qa)).status_code == 303


async def test_signing_in_is_throttled_per_client(service: RunningService, people: People) -> None:
    async with browser(service) as client:
        for n in range(20):
            assert (await sign_in(client, f"nobody{n}@example.com", "guess")).status_code == 401
        assert (await sign_in(client, people.qa)).status_code == 429


async def test_wrong_passwords_at_once_cannot_pass_the_limit_and_check_two_at_a_time(
    service: RunningService, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given every password check is watched (the real Argon2 check runs)
    checking = 0
    most_at_once = 0
    checked = 0
    real = accounts.password_matches

    def watched(password_hash: str | None, password: str) -> bool:
        nonlocal checking, most_at_once, checked
        with lock:
            checking += 1
            checked += 1
            most_at_once = max(most_at_once, checking)
        try:
            return real(password_hash, password)
        finally:
            with lock:
                checking -= 1

    lock = threading.Lock()
    monkeypatch.setattr(accounts, "password_matches", watched)

    # When 12 wrong passwords for one account arrive at once from one client
    async with browser(service) as client:
        page = await client.get("/console/sign-in")
        form = {"email": people.qa, "password": "guess", "csrf_token": csrf_token(page)}
        burst = await asyncio.gather(
            *(client.post("/console/sign-in", data=form) for _ in range(12))
        )
        # Then the limit of 5 holds: 5 are checked and refused, the rest are not checked
        assert sorted(r.status_code for r in burst) == [401] * 5 + [429] * 7
        # and the right password afterwards waits too
        assert (await sign_in(client, people.qa)).status_code == 429
    assert checked == 5
    assert most_at_once <= accounts.PASSWORD_CHECKS == 2
    with Session(service.services.engine) as session:
        outcomes = [a.outcome for a in session.exec(select(SignInAttempt)).all()]
    assert sorted(outcomes) == ["refused"] * 5 + ["throttled"] * 8
