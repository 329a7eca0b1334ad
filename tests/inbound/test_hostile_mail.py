"""Returned mail built to be slow to read: it is read outside the write gate, within limits of
size and time, and fails alone while the service goes on answering."""

from __future__ import annotations

import asyncio
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import aiosmtplib
import pytest
from sqlmodel import Session, select

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.return_addresses import Purpose
from oos_notify.settings import Settings
from oos_notify.store.models import InboundMessage
from tests.conftest import RunningService, release_failure
from tests.inbound.conftest import (
    COORDINATOR,
    QA,
    addresses,
    detail,
    open_incident,
    sent_since,
    timeline,
)
from tests.inbound.mail import deliver, passed, reply


def hostile(sender: str, to: str, html: str) -> bytes:
    """A reply whose only body is ``html``, as the manufacturer's server passed it."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Re: notice"
    message["Message-ID"] = make_msgid(domain="mercy.example")
    message["Authentication-Results"] = passed("mercy.example")
    message.set_content(html, subtype="html", cte="quoted-printable")  # SMTP's short lines
    return message.as_bytes()


def many_parts(sender: str, to: str, count: int) -> bytes:
    """A reply of ``count`` one-letter MIME parts: small, and slow for Python's parser."""
    parts = "".join("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(count))
    head = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: Re: notice\r\n"
        f"Message-ID: {make_msgid(domain='mercy.example')}\r\n"
        f"Authentication-Results: {passed('mercy.example')}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    )
    return f"{head}{parts}--b--\r\n".encode()


async def refused(port: int, raw: bytes, to: str) -> int:
    """Deliver ``raw`` as the relay would; the code the listener answered DATA with."""
    try:
        await deliver(port, raw, to, sender=COORDINATOR)
    except aiosmtplib.SMTPDataError as error:
        return error.code
    return 250


async def test_a_megabyte_of_hostile_html_fails_alone_while_every_event_is_answered_in_a_second(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    # Given a notice, and ~1 MB of "<a" (quadratic for html.parser) sent to its reply address
    opened = await open_incident(service, smtp)
    to = addresses(service).address(opened.notification_id, Purpose.REPLY)
    before = smtp.handler.count
    attack = asyncio.create_task(
        refused(settings.inbound_smtp_port, hostile(COORDINATOR, to, "<a" * 500_000), to)
    )

    # When the QA system posts events meanwhile, and for a while after
    waits = []
    for number in range(12):
        event = release_failure(
            event_id=f"QA-EVT-LOAD-{number}", incident_ref=f"OOS-2026-{7000 + number}"
        )
        started = time.monotonic()
        answer = await service.post_event(event)
        waits.append(time.monotonic() - started)
        assert answer.status_code == 202, answer.text
        await asyncio.sleep(0.1)

    # Then every event was answered within a second
    assert max(waits) < 1.0, [round(w, 2) for w in waits]
    code = await asyncio.wait_for(attack, 60)
    # And the hostile message was refused, recorded as failed, shown and sent to QA unread
    assert code == 554
    incident = await detail(service, opened.incident_id)
    [mail] = incident["returned_mail"]
    assert (mail["kind"], mail["outcome"]) == ("unreadable", "error")
    assert "its text/html part is" in mail["detail"]["error"]
    assert incident["acknowledgements"] == [] and incident["status"] == "notifying"
    entries = await timeline(service, opened.incident_id)
    assert "returned_mail_unreadable" in [e["action"] for e in entries]
    await service.settle()
    [forward] = [m for m in sent_since(smtp, before) if m.recipients == (QA,)]
    assert forward.subject == "Answer the center's reply: OOS-2026-0142, lot LOT-24-1187"
    assert "UNVERIFIED" in forward.part("plain")


@pytest.fixture
def settings(tmp_path: Path, smtp: CaptureServer, settings: Settings) -> Settings:
    return settings.model_copy(update={"inbound_max_parse_seconds": 1.0})


async def test_a_message_slower_to_read_than_the_limit_is_stopped_and_the_next_one_is_read(
    service: RunningService, smtp: CaptureServer, settings: Settings, clock: ManualClock
) -> None:
    # Given a reading limit of one second, and 20,000 MIME parts (~0.7 MB, under the size
    # limit) that take Python's parser far longer
    opened = await open_incident(service, smtp)
    to = addresses(service).address(opened.notification_id, Purpose.REPLY)

    # When it arrives, and then the coordinator's "Received"
    started = time.monotonic()
    code = await refused(settings.inbound_smtp_port, many_parts(COORDINATOR, to, 20_000), to)
    took = time.monotonic() - started
    await deliver(
        settings.inbound_smtp_port, reply(COORDINATOR, to, "Received."), to, sender=COORDINATOR
    )

    # Then the first is stopped at the limit and recorded as failed; the second confirms
    assert code == 554 and took < 10, took
    with Session(service.services.engine) as session:
        failed = session.exec(select(InboundMessage).where(InboundMessage.outcome == "error"))
        [record] = failed.all()
    assert record.detail["error"] == "reading it took longer than 1 s"
    assert (await detail(service, opened.incident_id))["status"] == "acknowledged"
