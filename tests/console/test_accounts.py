"""``oos-notify user``: accounts made, listed, disabled and given new passwords by the operator,
each change in the audit trail; and what a disabled account or a new password does to sessions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, col, select

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.settings import Settings
from oos_notify.store.db import transaction
from oos_notify.store.models import AuditEntry
from oos_notify.web.console import accounts
from tests.conftest import START, RunningService, command_env, service_settings, start_service
from tests.console.conftest import PASSWORD, People, browser, csrf_token, sign_in

COMMAND = str(Path(sys.executable).parent / "oos-notify")


def user(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, "user", *args],
        env=command_env(tmp_path),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_operator_manages_accounts_from_the_command_line(tmp_path: Path) -> None:
    made = user(tmp_path, "create", "--email", "Rivera@Manufacturer.example", "--role", "qa")
    assert made.returncode == 0, made.stderr
    password = made.stdout.strip()
    assert len(password) == 20 and "shown once" in made.stderr

    chosen = user(
        tmp_path,
        "create",
        "--email",
        "lead@manufacturer.example",
        "--role",
        "viewer",
        "--password-stdin",
        stdin="a long chosen passphrase\n",
    )
    assert chosen.returncode == 0 and chosen.stdout == ""
    again = user(tmp_path, "create", "--email", "rivera@manufacturer.example", "--role", "qa")
    assert again.returncode == 1 and "exists already" in again.stderr
    short = user(
        tmp_path, "reset-password", "lead@manufacturer.example", "--password-stdin", stdin="short\n"
    )
    assert short.returncode == 1 and "at least 12 characters" in short.stderr

    assert user(tmp_path, "disable", "lead@manufacturer.example").returncode == 0
    listed = user(tmp_path, "list").stdout.splitlines()
    assert [line.split("\t")[:2] for line in listed] == [
        ["lead@manufacturer.example", "viewer"],
        ["rivera@manufacturer.example", "qa"],
    ]
    assert "disabled" in listed[0] and "active" in listed[1]
    assert password not in "\n".join(listed)
    reset = user(tmp_path, "reset-password", "rivera@manufacturer.example")
    assert reset.returncode == 0 and reset.stdout.strip() != password
    missing = user(tmp_path, "disable", "nobody@manufacturer.example")
    assert missing.returncode == 1 and "no console user" in missing.stderr

    url = command_env(tmp_path)["OOS_NOTIFY_DATABASE_URL"]
    from oos_notify.store.db import make_engine

    engine = make_engine(url)
    with Session(engine) as session:
        trail = session.exec(
            select(AuditEntry).where(AuditEntry.actor == "operator").order_by(col(AuditEntry.seq))
        ).all()
    engine.dispose()
    assert [(e.action, e.detail["email"]) for e in trail] == [
        ("console_user_created", "rivera@manufacturer.example"),
        ("console_user_created", "lead@manufacturer.example"),
        ("console_user_disabled", "lead@manufacturer.example"),
        ("console_password_reset", "rivera@manufacturer.example"),
    ]


async def test_disabling_an_account_or_resetting_its_password_ends_its_sessions(
    service: RunningService, people: People
) -> None:
    async with browser(service) as viewer, browser(service) as qa:
        await sign_in(viewer, people.viewer)
        await sign_in(qa, people.qa)
        with transaction(service.services.engine) as session:
            accounts.disable_user(session, people.viewer, START)
            accounts.reset_password(session, people.qa, "another long passphrase", START)
        assert (await viewer.get("/console")).status_code == 303
        assert (await qa.get("/console")).status_code == 303
        assert (await sign_in(viewer, people.viewer)).status_code == 401
        assert (await sign_in(qa, people.qa)).status_code == 401
        assert (await sign_in(qa, people.qa, "another long passphrase")).status_code == 303


@pytest.fixture
def https_settings(tmp_path: Path, smtp: CaptureServer) -> Settings:
    port = service_settings(tmp_path, smtp).port
    return service_settings(tmp_path, smtp, port=port, public_base_url="https://oos.example")


async def test_over_https_the_cookie_is_secure_and_host_only(
    https_settings: Settings, clock: ManualClock
) -> None:
    running = await start_service(https_settings, clock)
    try:
        with transaction(running.services.engine) as session:
            accounts.create_user(
                session, "a@manufacturer.example", accounts.Role.QA, PASSWORD, START
            )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{https_settings.port}") as client:
            form = await client.get("/console/sign-in")
            # the cookie is Secure: a browser would not send it back over plain HTTP, this test does
            client.cookies.set(
                "__Host-oos_console_sign_in", form.cookies["__Host-oos_console_sign_in"]
            )
            signed = await client.post(
                "/console/sign-in",
                data={
                    "email": "a@manufacturer.example",
                    "password": PASSWORD,
                    "csrf_token": csrf_token(form),
                },
            )
        assert "Secure" in form.headers["set-cookie"]
        assert signed.status_code == 303
        cookie = signed.headers.get_list("set-cookie")[0]
        assert cookie.startswith("__Host-oos_console=")
        assert all(flag in cookie for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"))
    finally:
        await running.stop()


async def test_the_mailbox_page_exists_only_with_the_embedded_capture_server(
    service: RunningService, people: People
) -> None:
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        board = await client.get("/console")
        mailbox = await client.get("/console/mailbox")
    assert "/console/mailbox" not in board.text
    assert mailbox.status_code == 404
    assert "embedded capture server" in mailbox.text


def test_the_operator_names_the_person_who_signs(tmp_path: Path) -> None:
    made = user(
        tmp_path, "create", "--email", "okafor@manufacturer.example", "--role", "qa", "--name", "B"
    )
    assert made.returncode == 0, made.stderr
    named = user(tmp_path, "set-name", "okafor@manufacturer.example", "--name", " Ben Okafor ")
    assert named.returncode == 0, named.stderr
    assert named.stdout.strip() == "okafor@manufacturer.example signs as Ben Okafor"
    for hostile in ("Ben\u202eOkafor", "Ben\nOkafor", "x" * 201):
        refused = user(tmp_path, "set-name", "okafor@manufacturer.example", "--name", hostile)
        assert refused.returncode == 1, hostile
        assert "name:" in refused.stderr
    [line] = user(tmp_path, "list").stdout.splitlines()
    assert line.split("\t")[:3] == ["okafor@manufacturer.example", "qa", "Ben Okafor"]
