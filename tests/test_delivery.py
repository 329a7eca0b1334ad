"""Delivery over SMTP: every attempt recorded, transient failures retried, permanent ones shown."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlmodel import Session as DbSession
from sqlmodel import select

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureHandler, CaptureServer, free_port
from oos_notify.settings import Settings
from oos_notify.store.models import AuditEntry, DeliveryAttempt, Notification
from tests.conftest import RunningService, received, release_failure, start_service
from tests.smtp_faults import Fault, FaultySmtpServer


class RefusingHandler(CaptureHandler):
    """Accepts mail except for one mailbox, which it rejects permanently."""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address == "celllab@mercy.example":
            return "550 5.1.1 <celllab@mercy.example>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def test_server_down_then_back_retries_with_the_same_message_id(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    # Given an SMTP server that is not there yet
    port = free_port()
    down = settings.model_copy(update={"smtp_port": port})
    service = await start_service(down, clock)
    try:
        answer = await service.post_event(release_failure())
        assert answer.status_code == 202
        await service.settle()
        incident_id = answer.json()["incident_id"]
        detail = (
            await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)
        ).json()
        first = [n for n in detail["notifications"] if n["level"] == 0]
        # Then the first attempt failed, is recorded, and the step waits for its retry
        assert {n["status"] for n in first} == {"scheduled"}
        assert all(n["attempts"] == 1 and n["last_error"] for n in first)
        assert all(n["due_at"] > "2026-11-24T15:12:00Z" for n in first)

        # When the server comes back and the retry falls due
        with CaptureServer(port=port) as smtp:
            clock.advance(timedelta(minutes=2))
            await service.settle()
            messages = await received(smtp, 3)
        # Then each notification arrives once, with the Message-ID it was given at scheduling
        by_id = {n["message_id"]: n for n in first}
        assert sorted(m.message_id for m in messages) == sorted(by_id)
        with DbSession(service.services.engine) as db:
            attempts = db.exec(select(DeliveryAttempt).order_by(DeliveryAttempt.at)).all()
        assert [a.outcome for a in attempts] == ["unreachable"] * 3 + ["sent"] * 3
        assert all(a.smtp_reply for a in attempts)
    finally:
        await service.stop()


async def test_permanent_rejection_is_recorded_and_escalation_goes_on(
    settings: Settings, clock: ManualClock
) -> None:
    with CaptureServer(handler=RefusingHandler()) as smtp:
        service = await start_service(settings.model_copy(update={"smtp_port": smtp.port}), clock)
        try:
            answer = await service.post_event(release_failure())
            incident_id = answer.json()["incident_id"]
            delivered = await received(smtp, 2)
            await service.settle()
            assert sorted(m.recipients[0] for m in delivered) == [
                "ct-coord@mercy.example",
                "ct-md@mercy.example",
            ]

            detail = (
                await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)
            ).json()
            lab = next(
                n for n in detail["notifications"] if n["recipient"] == "celllab@mercy.example"
            )
            assert lab["status"] == "failed" and lab["attempts"] == 1
            assert "550" in lab["last_error"] or "mailbox unavailable" in lab["last_error"]

            # The escalation is not held up by the failed delivery
            clock.advance(timedelta(hours=2))
            await service.settle()
            reminders = (await received(smtp, 4))[2:]
            assert {m.recipients[0] for m in reminders} >= {"ct-coord2@mercy.example"}
            timeline = (
                await service.client.get(
                    f"/v1/incidents/{incident_id}/timeline", headers=service.auth
                )
            ).json()
            assert any(
                e["action"] == "notification_failed" and e["detail"]["smtp_code"] == 550
                for e in timeline
            )
        finally:
            await service.stop()


async def test_sent_row_is_never_claimed_again(settings: Settings, clock: ManualClock) -> None:
    with CaptureServer() as smtp:
        service = await start_service(settings.model_copy(update={"smtp_port": smtp.port}), clock)
        try:
            await service.post_event(release_failure())
            await received(smtp, 3)
            for _ in range(3):
                await service.settle()
            with DbSession(service.services.engine) as db:
                sent = db.exec(select(Notification).where(Notification.status == "sent")).all()
            assert len(sent) == 3 and all(n.attempts == 1 for n in sent)
            assert len(smtp.handler.messages()) == 3
        finally:
            await service.stop()


async def test_a_send_interrupted_by_a_crash_is_resent_with_its_message_id(
    settings: Settings, clock: ManualClock
) -> None:
    # Given notifications claimed for sending when the process died (no SMTP server took them)
    port = free_port()
    service = await start_service(settings.model_copy(update={"smtp_port": port}), clock)
    await service.post_event(release_failure())
    await service.stop()
    assert service.services.dispatcher is not None
    dead = service.services.dispatcher.owner
    with DbSession(service.services.engine) as db:
        first = db.exec(select(Notification).where(Notification.level == 0)).all()
        for row in first:
            row.status, row.lease_until = "sending", clock.now() + timedelta(minutes=10)
            row.claimed_by = dead
            row.due_at = clock.now()  # it was due when it was claimed
            db.add(row)
        db.commit()
        expected = sorted(row.message_id for row in first)

    # When the service starts again with the mail server up
    with CaptureServer(port=port) as smtp:
        again = await start_service(
            settings.model_copy(update={"smtp_port": port}), clock, api_key=service.api_key
        )
        try:
            messages = await received(smtp, 3)
            await again.settle()
            # Then each is sent at once, once, under the Message-ID it was given
            assert sorted(m.message_id for m in smtp.handler.messages()) == expected
            assert len(messages) == 3
        finally:
            await again.stop()


async def test_a_sender_whose_claims_were_taken_over_records_nothing_of_its_send(
    settings: Settings, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a mail server slow enough that the sender is still at it when its lease has run
    # out and another sender has taken the rows over
    with FaultySmtpServer() as smtp:
        smtp.handler.set_faults(Fault("DATA", delay=1.0))
        service = await start_service(
            settings.model_copy(update={"smtp_port": smtp.port, "smtp_connections": 1}), clock
        )
        try:
            await service.post_event(release_failure())
            assert await asyncio.to_thread(smtp.handler.data_begun.wait, 30)
            with DbSession(service.services.engine) as db:
                first = db.exec(select(Notification).where(Notification.level == 0)).all()
                for row in first:
                    row.claimed_by = "another-worker/0001"
                    db.add(row)
                db.commit()
            await service.settle()
        finally:
            await service.stop()

    # Then what it sent is not recorded as its own: the rows are still the new owner's to
    # send and settle, with no attempt, no audit entry and no escalation from this sender
    with DbSession(service.services.engine) as db:
        rows = db.exec(select(Notification).where(Notification.level == 0)).all()
        attempts = db.exec(select(DeliveryAttempt)).all()
        sent = db.exec(select(AuditEntry).where(AuditEntry.action == "notification_sent")).all()
    assert {(n.status, n.claimed_by) for n in rows} == {("sending", "another-worker/0001")}
    assert attempts == [] and sent == []
    assert "was taken over by another sender" in caplog.text


async def test_a_summary_in_any_script_arrives_as_written(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given an event whose summary is in Polish, Russian and Swedish, with a line that ends in
    # white space where quoted-printable wraps it: letters whose UTF-8 bytes hold 0x85, which
    # reads as a line break in Latin-1 (a-ogonek, the Cyrillic kha, A-ring)
    summary = (
        "Żywotność produktu poniżej specyfikacji; dochodzenie wszczęte, ą. "
        "Жизнеспособность ниже спецификации, хорошо. Åtgärd: utredning. "
        "Dosage = 2 x 10⁸ cells; see the report."
    )
    assert (await service.post_event(release_failure(summary=summary))).status_code == 202
    await service.settle()

    # Then every first notice shows the summary as written in both parts, each encoded line
    # within RFC 2045's 76 characters
    messages = await received(smtp, 3)
    for message in messages:
        assert summary in message.part("plain"), message.recipients
        assert summary in message.part("html"), message.recipients
        body = message.raw.split(b"\r\n\r\n", 1)[1]
        assert max(len(line) for line in body.split(b"\r\n")) <= 76
