"""Returned mail read from a real IMAP mailbox (a private Dovecot): each message processed
once, across a restart, one bad message never blocks the others, and a server that cannot mark
or move processed mail does not keep the reader from waiting."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.return_addresses import Purpose
from oos_notify.settings import Settings
from oos_notify.store.models import InboundMessage
from tests.conftest import RunningService, start_service
from tests.inbound.conftest import (
    COORDINATOR,
    LEVEL_ONE,
    QA,
    addresses,
    detail,
    imap_settings,
    open_incident,
    sent_since,
    until,
)
from tests.inbound.dovecot import PrivateDovecot
from tests.inbound.mail import reply, returned


def recorded(service: RunningService) -> list[InboundMessage]:
    with Session(service.services.engine) as session:
        return list(session.exec(select(InboundMessage).order_by(col(InboundMessage.id))))


@pytest.fixture
def settings(tmp_path: Path, smtp: CaptureServer, dovecot: PrivateDovecot) -> Settings:
    return imap_settings(tmp_path, smtp, dovecot, inbound_max_message_bytes=64 * 1024)


KEEPS_NOTHING = """\
imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY \
THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT \
CHILDREN NAMESPACE LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN \
CONTEXT=SEARCH LIST-STATUS BINARY SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE \
LITERAL+ NOTIFY
mail_plugins = $mail_plugins acl
plugin {{
  acl = vfile:{acl}
}}
"""
"""Dovecot 2.3's own capabilities without MOVE and UIDPLUS, and a global ACL file."""


@pytest.fixture
def keeps_nothing(dovecot: PrivateDovecot) -> PrivateDovecot:
    """The private server restarted as one where a processed message stays in the inbox as it
    was: the owner may do anything there but write flags, so SELECT offers no \\* among the
    permanent flags and a keyword would not last, and it offers neither MOVE nor UIDPLUS."""
    acl = dovecot.root / "acl"
    acl.write_text("INBOX owner lrstipekxa\n")  # every right but w
    dovecot.stop()
    dovecot.start(extra=KEEPS_NOTHING.format(acl=acl), rawlog=True)
    client = dovecot.client()
    try:
        _, answers = client.capability()
        client.select("INBOX")
        _, [permanent] = client.response("PERMANENTFLAGS")
    finally:
        client.logout()
    capabilities = set(answers[-1].split())
    assert b"IDLE" in capabilities
    assert not {b"MOVE", b"UIDPLUS"} & capabilities
    assert permanent is not None and b"\\*" not in permanent
    return dovecot


async def test_each_message_is_processed_once_across_a_restart(
    settings: Settings, smtp: CaptureServer, dovecot: PrivateDovecot, clock: ManualClock
) -> None:
    service = await start_service(settings, clock)
    try:
        opened = await open_incident(service, smtp)
        before = smtp.handler.count
        to = addresses(service).address(opened.notification_id, Purpose.REPLY)
        away = returned(
            "autoreply-outlook-en.eml", addresses(service), opened.notification_id, COORDINATOR
        )
        question = reply(COORDINATOR, to, "Can you call me about the retest?")
        stranger = reply(COORDINATOR, "oos@reply.manufacturer.example", "Received.")
        for message in (away, question, stranger):
            dovecot.append(message)
        await until(lambda: len(recorded(service)) == 3)
        await service.settle()
        api_key = service.api_key
    finally:
        await service.stop()
    outcomes = sorted(m.outcome for m in recorded(service))
    assert outcomes == ["escalated", "forwarded", "unmatched"]
    new = [m.recipients[0] for m in sent_since(smtp, before)]
    assert sorted(new) == sorted([*LEVEL_ONE, QA])  # the next step once, one forward to QA
    assert dovecot.messages("INBOX") == []
    assert all(b"$OOSProcessed" in flags for flags, _ in dovecot.messages("Processed"))

    # As if the service had died between recording the question and moving it, and a new
    # message arrived meanwhile: the copy is known by its Message-ID, the new one is read.
    dovecot.append(question)
    dovecot.append(reply(COORDINATOR, to, "Received, thanks."))
    before = smtp.handler.count
    service = await start_service(settings, clock, api_key)
    try:
        await until(lambda: len(dovecot.messages("INBOX")) == 0)
        await until(lambda: len(recorded(service)) == 4)
        await service.settle()
        incident = await detail(service, opened.incident_id)
    finally:
        await service.stop()
    assert incident["status"] == "acknowledged"
    assert [m.recipients[0] for m in sent_since(smtp, before)].count(QA) == 1  # the receipt
    assert incident["returned_mail_counts"] == {
        "bounce": 0,
        "delay": 0,
        "auto_reply": 1,
        "reply": 2,
    }
    assert len(dovecot.messages("Processed")) == 5


async def test_a_message_that_cannot_be_processed_fails_alone(
    service: RunningService, smtp: CaptureServer, dovecot: PrivateDovecot
) -> None:
    opened = await open_incident(service, smtp)
    before = smtp.handler.count
    oversized = returned(
        "autoreply-outlook-en.eml", addresses(service), opened.notification_id, COORDINATOR
    ).replace(b"I am out of the office", b"x" * 100_000 + b"\nI am out of the office")
    away = returned(
        "autoreply-gmail-vacation.eml", addresses(service), opened.notification_id, COORDINATOR
    )
    dovecot.append(oversized)
    dovecot.append(away)

    await until(lambda: len(recorded(service)) == 2)
    await service.settle()

    failed, escalated = sorted(recorded(service), key=lambda m: m.outcome)
    assert (failed.outcome, failed.kind) == ("error", "unreadable")
    assert "bytes, over 65536" in failed.detail["error"]
    assert escalated.outcome == "escalated"
    assert {m.recipients[0] for m in sent_since(smtp, before)} == LEVEL_ONE
    flags = sorted(flags for flags, _ in dovecot.messages("Processed"))
    assert sum(b"$OOSFailed" in f for f in flags) == 1
    ready = await service.client.get("/readyz")
    assert ready.json()["checks"]["inbound"] == "ok"
    metrics = (await service.client.get("/metrics")).text
    assert 'oos_notify_returned_mail_total{kind="unreadable",outcome="error"} 1.0' in metrics
    assert 'oos_notify_returned_mail_total{kind="auto_reply",outcome="escalated"} 1.0' in metrics


async def test_the_reader_waits_where_processed_mail_cannot_be_marked_or_moved(
    settings: Settings, smtp: CaptureServer, keeps_nothing: PrivateDovecot, clock: ManualClock
) -> None:
    service = await start_service(settings, clock)
    try:
        opened = await open_incident(service, smtp)
        before = smtp.handler.count
        to = addresses(service).address(opened.notification_id, Purpose.REPLY)
        await until(lambda: "IDLE" in keeps_nothing.commands())
        idles = keeps_nothing.commands().count("IDLE")
        keeps_nothing.append(reply(COORDINATOR, to, "Can you call me about the retest?"))
        await until(lambda: len(recorded(service)) == 1)

        # The message stays in the inbox, so each pass sees it again. Once a pass finds nothing
        # new the reader must wait (IDLE) rather than read the folder over and over: it goes
        # back to IDLE, and in a quiet second the server sees no command from it at all.
        await until(lambda: keeps_nothing.commands().count("IDLE") > idles)
        seen = Counter(keeps_nothing.commands())
        await asyncio.sleep(1.0)
        assert Counter(keeps_nothing.commands()) - seen == {}

        keeps_nothing.append(reply(COORDINATOR, to, "Received, thanks."))
        await until(lambda: len(recorded(service)) == 2)
        await service.settle()
        incident = await detail(service, opened.incident_id)
        ready = await service.client.get("/readyz")
    finally:
        await service.stop()
    assert sorted(m.outcome for m in recorded(service)) == ["acknowledged", "forwarded"]
    assert incident["status"] == "acknowledged"
    # The question forwarded once, then the receipt of the acknowledgement.
    assert [m.recipients[0] for m in sent_since(smtp, before)].count(QA) == 2
    assert ready.json()["checks"]["inbound"] == "ok"
    assert len(keeps_nothing.messages("INBOX")) == 2
