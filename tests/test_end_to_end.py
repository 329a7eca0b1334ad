"""The whole path over real HTTP and real SMTP: event in, emails out, acknowledgement by link."""

from __future__ import annotations

from datetime import timedelta

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.settings import Settings
from tests.conftest import RunningService, ack_link, received, release_failure, start_service


async def test_acknowledgement_stops_escalation_and_starts_patient_brief(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given a release failure at Mercy General, whose plan tells coordinator and cell lab first
    answer = await service.post_event(release_failure())
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "notifying" and body["duplicate"] is False
    first_step = {
        s["recipient"] for s in body["scheduled"] if s["due_at"] == "2026-11-24T15:12:00Z"
    }
    assert first_step == {"ct-coord@mercy.example", "ct-md@mercy.example", "celllab@mercy.example"}

    # When the initial emails arrive over SMTP
    initial = await received(smtp, 3)
    assert sorted(r for m in initial for r in m.recipients) == [
        "celllab@mercy.example",
        "ct-coord@mercy.example",
        "ct-md@mercy.example",
    ]
    coordinator_mail = next(m for m in initial if m.recipients == ("ct-coord@mercy.example",))
    assert coordinator_mail.subject == (
        "Confirm receipt: OOS-2026-0142, lot LOT-24-1187 failed release"
    )
    assert coordinator_mail.message.get_content_type() == "multipart/alternative"
    assert coordinator_mail.message["Auto-Submitted"] == "auto-generated"
    assert "viability" in coordinator_mail.part("plain") and "71 %" in coordinator_mail.part("html")
    link = ack_link(coordinator_mail)
    assert link in coordinator_mail.part("html")
    # And the text says first what to do and by when: the reminder's time, before the facts
    text = coordinator_mail.part("plain")
    assert text.index("CONFIRM BY Tue 24 Nov 2026, 11:12 CST") < text.index(link)
    assert text.index(link) < text.index("WHAT FAILED")
    # And, with no reply domain, it does not say that a reply confirms
    assert "confirms too" not in text and "confirms too" not in coordinator_mail.part("html")

    # Then opening the link (as a mail scanner would) changes nothing
    page = await service.client.get(link)
    assert page.status_code == 200 and "please confirm" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    incident_id = body["incident_id"]
    detail = (await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)).json()
    assert detail["status"] == "notifying" and detail["acknowledgements"] == []

    # And posting the page's form acknowledges
    confirmed = await service.client.post(
        link,
        data={"response": "received", "comment": "Physician informed"},
        headers={"User-Agent": "PhoneBrowser/1.0"},
    )
    assert confirmed.status_code == 200 and "acknowledged" in confirmed.text
    detail = (await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)).json()
    assert detail["status"] == "acknowledged"
    [ack] = detail["acknowledgements"]
    assert ack["by"] == "ct-coord@mercy.example" and ack["comment"] == "Physician informed"

    # The QA receipt and the patient-liaison brief go out at once
    after_ack = await received(smtp, 5)
    new = after_ack[3:]
    assert {m.recipients[0] for m in new} == {"qa@manufacturer.example", "navigator@mercy.example"}
    receipt = next(m for m in new if m.recipients == ("qa@manufacturer.example",))
    assert receipt.subject == "Confirmed by the center: OOS-2026-0142, lot LOT-24-1187"
    assert "Physician informed" in receipt.part("plain")
    brief = next(m for m in new if m.recipients == ("navigator@mercy.example",))
    assert "COI-8K2M-4471" in brief.part("plain")
    assert "/ack/" not in brief.part("plain")

    # And when the reminder's time comes, nothing more reaches the SMTP server
    clock.advance(timedelta(hours=9))
    await service.settle()
    assert len(smtp.handler.messages()) == 5
    statuses = {
        (n["template"], n["status"])
        for n in (
            await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)
        ).json()["notifications"]
    }
    assert ("escalation_reminder", "cancelled") in statuses
    assert ("escalation_final", "cancelled") in statuses
    assert ("patient_liaison_urgent", "cancelled") in statuses

    # A second POST is harmless and says who acknowledged
    again = await service.client.post(link, data={"response": "received"})
    assert again.status_code == 200 and "Already acknowledged" in again.text
    assert "ct-coord@mercy.example" in again.text


async def test_unacknowledged_incident_escalates_on_time(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    answer = await service.post_event(release_failure())
    incident_id = answer.json()["incident_id"]
    await received(smtp, 3)

    # Just before the reminder is due (2 business hours: 11:12 Chicago), nothing more is sent
    clock.advance(timedelta(hours=1, minutes=59))
    await service.settle()
    assert len(smtp.handler.messages()) == 3

    clock.advance(timedelta(minutes=1))
    await service.settle()
    reminders = (await received(smtp, 5))[3:]
    assert {m.recipients[0] for m in reminders} == {
        "ct-coord2@mercy.example",
        "ct-md@mercy.example",
    }
    assert all(
        m.subject == "Confirm now: OOS-2026-0142, notice on lot LOT-24-1187 unconfirmed"
        for m in reminders
    )
    detail = (await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)).json()
    assert detail["status"] == "escalated" and detail["escalation_level"] == 1

    assert len({m.message_id for m in smtp.handler.messages()}) == 5
    # Mail clients thread each recipient's messages of the incident: the first one a recipient
    # gets points at no message (none was sent before it), each later one at that first one
    # (a message that really went out), as the reminders and the notice of resolution do
    closed = await service.post_event(
        release_failure(event_id="QA-EVT-RESOLVED", type="resolved", failed_attributes=[])
    )
    assert closed.status_code == 202, closed.text
    await service.settle()
    messages = await received(smtp, 6)
    first: dict[str, str] = {}
    for message in messages:
        root = first.setdefault(message.recipients[0], message.message_id)
        if root == message.message_id:
            assert message.message["References"] is None
        else:
            assert message.message["In-Reply-To"] == message.message["References"] == root
    assert len(first) < len(messages)


async def test_step_survives_a_restart_and_is_sent_once(
    settings: Settings, smtp: CaptureServer, clock: ManualClock
) -> None:
    first = await start_service(settings, clock)
    answer = await first.post_event(release_failure())
    assert answer.status_code == 202
    await received(smtp, 3)
    await first.stop()

    # While the service is down, the reminder falls due
    clock.advance(timedelta(hours=3))
    second = await start_service(settings, clock, api_key=first.api_key)
    try:
        messages = await received(smtp, 5)
        await second.settle()
        reminders = [m for m in smtp.handler.messages() if m.subject.startswith("Confirm now: ")]
        assert sorted(m.recipients[0] for m in reminders) == [
            "ct-coord2@mercy.example",
            "ct-md@mercy.example",
        ]
        assert len(messages) == len(smtp.handler.messages()) == 5
    finally:
        await second.stop()


async def test_withdrawn_incident_cancels_what_is_pending_and_its_links_stop_working(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    answer = await service.post_event(release_failure())
    incident_id = answer.json()["incident_id"]
    link = ack_link((await received(smtp, 3))[0])

    # When QA withdraws the event that was raised in error
    withdrawn = await service.post_event(
        release_failure(event_id="QA-EVT-2026-000124", type="withdrawn", failed_attributes=[])
    )
    assert withdrawn.status_code == 202, withdrawn.text
    assert withdrawn.json()["status"] == "withdrawn"

    # Then the two people told hear that it was withdrawn, and nothing else is sent
    clock.advance(timedelta(days=3))
    await service.settle()
    messages = smtp.handler.messages()
    assert len(messages) == 6
    withdrawals = messages[3:]
    assert sorted(m.recipients[0] for m in withdrawals) == sorted(
        m.recipients[0] for m in messages[:3]
    )
    assert all(
        m.subject == "Withdrawn: OOS-2026-0142, lot LOT-24-1187 notice raised in error"
        for m in withdrawals
    )
    # And the link says the incident is closed without acknowledging
    page = await service.client.get(link)
    assert page.status_code == 200 and "This incident is closed" in page.text
    await service.client.post(link, data={"response": "received"})
    detail = (await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)).json()
    assert detail["status"] == "withdrawn" and detail["acknowledgements"] == []
    pending = [n for n in detail["notifications"] if n["status"] not in ("sent", "cancelled")]
    assert pending == []
    timeline = (
        await service.client.get(f"/v1/incidents/{incident_id}/timeline", headers=service.auth)
    ).json()
    actions = [e["action"] for e in timeline]
    assert actions[:2] == ["incident_opened", "notification_scheduled"]
    assert "notification_cancelled" in actions and actions.count("event_received") == 2


async def test_the_mailbox_exists_only_while_mail_is_captured(service: RunningService) -> None:
    # This service sends to a configured SMTP server, so there is nothing of its mail to show
    response = await service.client.get("/dev/mailbox")
    assert response.status_code == 404
    assert "capture server" in response.json()["detail"]
