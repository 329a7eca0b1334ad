"""The service behind a real Postfix relay set up as docs/returned-mail.md says: the notices go
out through it, its own reports come back to the listener, and it refuses at RCPT the reply
addresses the listener does not know. Each test starts a private Postfix (tests/inbound/
postfix.py) whose queue gives up after 2 seconds instead of 5 days."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from sqlmodel import Session, select

from oos_notify.delivery.capture import CapturedMessage, CaptureServer
from oos_notify.return_addresses import Purpose
from oos_notify.settings import Settings
from oos_notify.store.models import InboundMessage
from tests.conftest import RunningService, release_failure, service_settings
from tests.inbound.conftest import (
    AUTHSERV_ID,
    BACKUP_COORDINATOR,
    COORDINATOR,
    PHYSICIAN,
    QA,
    REPLY_DOMAIN,
    addresses,
    detail,
    sent_since,
    timeline,
    until,
)
from tests.inbound.mail import reply
from tests.inbound.postfix import PrivatePostfix, available
from tests.smtp_faults import Fault, FaultySmtpServer

FINAL = {"rx-director@mercy.example", "al-midwest@manufacturer.example"}
PHYSICIAN_NAME = "Dr. Lena Ortiz, CAR-T attending"
UNKNOWN = "550 5.1.1 <ct-md@mercy.example>: Recipient address rejected: User unknown"
TIMEOUT = 90.0
"""How long to wait for what the relay does on its own time. A loaded machine (the two suites side
by side, and more) once left the relay 30 s without retrying a deferred message; the tests pass
as soon as the relay acts, so waiting longer costs nothing when all is well."""


@pytest.fixture
def physician_mx() -> Iterator[FaultySmtpServer]:
    """The physician's mail server: a closed port until a test starts it."""
    server = FaultySmtpServer()
    try:
        yield server
    finally:
        server.down()


@pytest.fixture
def relay(
    smtp: CaptureServer, listener_port: int, physician_mx: FaultySmtpServer
) -> Iterator[PrivatePostfix]:
    """The organisation's relay: the reply domain to the listener, the physician's address to
    their own server, everything else of the centers and the manufacturer to ``smtp``."""
    why = available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    server = PrivatePostfix(
        REPLY_DOMAIN,
        listener_port,
        {
            PHYSICIAN: physician_mx.port,
            "mercy.example": smtp.port,
            "manufacturer.example": smtp.port,
        },
        queue_lifetime="2s",
    )
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def settings(tmp_path: Path, relay: PrivatePostfix, listener_port: int) -> Settings:
    return service_settings(
        tmp_path,
        None,
        smtp_host="127.0.0.1",
        smtp_port=relay.port,
        reply_domain=REPLY_DOMAIN,
        inbound="smtp",
        inbound_smtp_port=listener_port,
        inbound_authserv_id=AUTHSERV_ID,
    )


def words(text: str) -> str:
    return " ".join(text.split())


def to(smtp: CaptureServer, recipient: str) -> list[CapturedMessage]:
    return [m for m in smtp.handler.messages() if m.recipients == (recipient,)]


def backscatter(relay: PrivatePostfix, victim: str) -> list[tuple[str, list[str]]]:
    """Bounces the relay holds (``postqueue`` shows their empty sender as MAILER-DAEMON), and
    anything it holds for ``victim``."""
    return [(s, r) for s, r in relay.queued() if s in ("", "MAILER-DAEMON") or victim in r]


def first_report(smtp: CaptureServer) -> str:
    """QA's report of the first bounce, which brought the physician's next notice forward; the
    other report, of that notice's own bounce, says nothing moved. Either may arrive first."""
    reports = [words(m.part("plain")) for m in to(smtp, QA)]
    forward = f"Brought forward at once: the notice to {PHYSICIAN_NAME} (physician)."
    [report] = [r for r in reports if forward in r]
    [_] = [r for r in reports if "No other notice was brought forward." in r]
    return report


async def physician_notices(service: RunningService, incident_id: str) -> list[dict[str, Any]]:
    incident = await detail(service, incident_id)
    notices = [n for n in incident["notifications"] if n["recipient"] == PHYSICIAN]
    return sorted(notices, key=lambda n: int(n["level"]))


async def open_through_relay(service: RunningService, smtp: CaptureServer) -> str:
    answer = await service.post_event(release_failure())
    assert answer.status_code == 202, answer.text
    await service.settle()
    await until(lambda: to(smtp, COORDINATOR), TIMEOUT)
    return str(answer.json()["incident_id"])


async def both_physician_notices_failed(
    service: RunningService, relay: PrivatePostfix, incident_id: str
) -> None:
    """Wait until the physician's first notice and the one it brought forward have both come
    back, and QA was told of each."""

    async def failed() -> bool:
        notices = await physician_notices(service, incident_id)
        return [n["status"] for n in notices] == ["failed", "failed"]

    async def state() -> str:
        notices = await physician_notices(service, incident_id)
        keys = ("level", "status", "due_at", "sent_at", "attempts", "last_error")
        seen = [{key: n.get(key) for key in keys} for n in notices]
        return f"physician's notices {seen}; {relay.explain()}"

    await until(failed, TIMEOUT, state)


async def test_postfix_own_bounce_fails_the_notice_and_brings_the_physicians_next_forward(
    service: RunningService,
    smtp: CaptureServer,
    relay: PrivatePostfix,
    physician_mx: FaultySmtpServer,
) -> None:
    # Given a physician whose mail server does not know the address
    physician_mx.up().handler.set_faults(Fault("RCPT", UNKNOWN, PHYSICIAN))

    # When an incident opens and its notices go through the relay
    incident_id = await open_through_relay(service, smtp)

    # Then Postfix's bounce fails the notice, and the physician's next notice is sent at once,
    # which bounces too; the coordinator had the first notice, so nothing else moves
    await both_physician_notices_failed(service, relay, incident_id)
    await until(lambda: len(to(smtp, QA)) == 2, TIMEOUT)
    first, _ = await physician_notices(service, incident_id)
    assert first["last_error"].startswith("bounced: ") and "5.1.1" in first["last_error"]
    assert "User unknown" in first["last_error"]
    report = first_report(smtp)
    assert "returned as undeliverable" in report and "Server reply: 550 " in report
    delivered = {m.recipients[0] for m in smtp.handler.messages()}
    assert not FINAL & delivered and BACKUP_COORDINATOR not in delivered
    entries = await timeline(service, incident_id)
    bounced = [e for e in entries if e["action"] == "notification_bounced"]
    assert [e["detail"]["smtp_code"] for e in bounced] == [550, 550]
    await until(lambda: relay.queued() == [], TIMEOUT)


async def test_postfix_giving_up_on_an_unreachable_server_fails_the_notice_and_tells_qa(
    service: RunningService, smtp: CaptureServer, relay: PrivatePostfix
) -> None:
    # Given a physician whose mail server is down (its port closed) until the relay gives up
    # When an incident opens
    incident_id = await open_through_relay(service, smtp)

    # Then Postfix's give-up ("Action: failed", "Status: 4.4.1") fails the notice and tells QA;
    # the physician's next notice goes at once, and gives up in turn
    await both_physician_notices_failed(service, relay, incident_id)
    await until(lambda: len(to(smtp, QA)) == 2, TIMEOUT)
    first, _ = await physician_notices(service, incident_id)
    assert first["last_error"].startswith("bounced: ")
    assert first["last_error"].endswith("Connection refused")
    report = first_report(smtp)
    assert "returned as undeliverable" in report
    entries = await timeline(service, incident_id)
    assert [e["detail"]["status"] for e in entries if e["action"] == "notification_bounced"] == [
        "4.4.1",
        "4.4.1",
    ]
    assert not [e for e in entries if e["action"] == "delivery_delayed"]
    delivered = {m.recipients[0] for m in smtp.handler.messages()}
    assert not FINAL & delivered and BACKUP_COORDINATOR not in delivered


async def test_postfix_refuses_a_made_up_reply_address_at_rcpt_and_sends_no_backscatter(
    service: RunningService,
    smtp: CaptureServer,
    relay: PrivatePostfix,
    physician_mx: FaultySmtpServer,
) -> None:
    # Given the relay set up as documented, and an incident whose notices went out
    physician_mx.up()
    incident_id = await open_through_relay(service, smtp)
    before = smtp.handler.count
    made_up = f"oos+a{'0' * 42}@{REPLY_DOMAIN}"
    victim = "someone@mercy.example"

    # When a third party sends, in somebody else's name, to an address the service never made
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, timeout=10) as client:
        await client.mail(victim)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt(made_up)

    # Then Postfix refuses it at RCPT, so it queues nothing and bounces nothing to the victim
    assert refused.value.code == 550
    assert "Recipient address rejected: undeliverable address" in refused.value.message
    assert not backscatter(relay, victim)
    assert "NOQUEUE: reject: RCPT" in relay.log()
    with Session(service.services.engine) as db:
        assert db.exec(select(InboundMessage)).all() == []

    # And a genuine reply to the same incident still gets through the check and confirms
    [notice] = to(smtp, COORDINATOR)
    reply_to = addresses(service).address(str(notice.message["X-OOS-Notification"]), Purpose.REPLY)
    raw = reply(COORDINATOR, reply_to, "Received, thanks.")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, timeout=10) as client:
        await client.sendmail(COORDINATOR, [reply_to], raw)

    async def acknowledged() -> bool:
        return (await detail(service, incident_id))["status"] == "acknowledged"

    await until(acknowledged, TIMEOUT)
    assert not [m for m in sent_since(smtp, before) if victim in m.recipients]
    assert not backscatter(relay, victim)
