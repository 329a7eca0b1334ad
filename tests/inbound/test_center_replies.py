"""A center speaks in a reply: real replies over the real SMTP listener say what the link's page
lets a center say, and do the same where the text reads one way; otherwise QA gets the reply
forwarded with the request shown first, and nothing of it is taken."""

from __future__ import annotations

from oos_notify.delivery.capture import CaptureServer
from oos_notify.return_addresses import Purpose
from oos_notify.settings import Settings
from tests.conftest import START, RunningService
from tests.inbound.conftest import (
    COORDINATOR,
    QA,
    addresses,
    detail,
    open_incident,
    sent_since,
    timeline,
)
from tests.inbound.mail import deliver, reply

TODAY = START.date().isoformat()  # 09:12 in Chicago on the test clock's day


def words(text: str) -> str:
    return " ".join(text.split())


async def test_ok_flu_cy_started_today_call_me_confirms_moves_the_date_and_asks_for_a_call(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    # Given the coordinator's first notice
    opened = await open_incident(service, smtp)
    before = smtp.handler.count
    to = addresses(service).address(opened.notification_id, Purpose.REPLY)

    # When the coordinator replies above the quoted notice
    answer = reply(
        COORDINATOR,
        to,
        "OK. Flu/Cy started today, call me on +1 312 555 0199 between 14:00 and 16:00\nDana",
        quoting=opened.notice.part("plain"),
    )
    await deliver(settings.inbound_smtp_port, answer, to, sender=COORDINATOR)
    await service.settle()

    # Then the notice is confirmed, the date moved, and the call request recorded, by her
    incident = await detail(service, opened.incident_id)
    assert incident["status"] == "acknowledged"
    assert incident["key_dates"]["lymphodepletion_start"] == TODAY
    started, call = incident["center_reports"]
    assert (started["kind"], started["day"], started["source"]) == (
        "lymphodepletion_started",
        TODAY,
        "reply",
    )
    assert (call["kind"], call["phone"], call["call_window"]) == (
        "call_me",
        "+1 312 555 0199",
        "14:00-16:00",
    )
    assert started["by"] == call["by"] == COORDINATOR
    assert incident["returned_mail"][0]["outcome"] == "acknowledged"
    entries = await timeline(service, opened.incident_id)
    request = next(e for e in entries if e["action"] == "callback_requested")
    assert request["actor"] == COORDINATOR and request["detail"]["source"] == "reply"

    # And QA hears of each: the confirmation, the new date, and the call to make
    to_qa = {m.subject: m for m in sent_since(smtp, before) if m.recipients == (QA,)}
    assert set(to_qa) == {
        "Confirmed by the center: OOS-2026-0142, lot LOT-24-1187",
        "Check the dates, lymphodepletion started: OOS-2026-0142, lot LOT-24-1187",
        "Call the center back: OOS-2026-0142, lot LOT-24-1187",
    }
    call_text = words(to_qa["Call the center back: OOS-2026-0142, lot LOT-24-1187"].part("plain"))
    assert "on +1 312 555 0199, between 14:00-16:00 (America/Chicago)" in call_text
    assert "in a reply to the notice" in call_text


async def test_an_ambiguous_date_in_a_reply_is_forwarded_to_qa_highlighted_and_changes_nothing(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    opened = await open_incident(service, smtp)
    planned = (await detail(service, opened.incident_id))["key_dates"]["lymphodepletion_start"]
    before = smtp.handler.count
    to = addresses(service).address(opened.notification_id, Purpose.REPLY)

    # When the reply confirms, but writes the date as 11/12, which is November or December
    answer = reply(COORDINATOR, to, "Received. LD postponed to 11/12, please call")
    await deliver(settings.inbound_smtp_port, answer, to, sender=COORDINATOR)
    await service.settle()

    # Then the confirmation stands, but nothing of what it reports is taken
    incident = await detail(service, opened.incident_id)
    assert incident["status"] == "acknowledged"
    assert incident["key_dates"]["lymphodepletion_start"] == planned
    assert incident["center_reports"] == []
    assert incident["returned_mail"][0]["outcome"] == "forwarded"
    # And QA gets the reply forwarded, the doubt shown before the reply's own words
    forwards = [m for m in sent_since(smtp, before) if m.subject.startswith("Answer the center's")]
    [forward] = forwards
    assert forward.recipients == (QA,)
    text = words(forward.part("plain"))
    assert (
        "THE CENTER ASKS OR REPORTS: lymphodepletion postponed, but a date written with numbers "
        'only, which reads as two different days: "ld postponed to 11/12"'
    ) in text
    assert text.index("THE CENTER ASKS OR REPORTS") < text.index("| Received. LD postponed")
    assert "The center asks or reports:" in forward.part("html")


async def test_a_report_the_incident_cannot_take_is_forwarded_with_the_reason(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    opened = await open_incident(service, smtp)
    before = smtp.handler.count
    to = addresses(service).address(opened.notification_id, Purpose.REPLY)

    answer = reply(COORDINATOR, to, "Lymphodepletion started tomorrow")
    await deliver(settings.inbound_smtp_port, answer, to, sender=COORDINATOR)
    await service.settle()

    incident = await detail(service, opened.incident_id)
    assert incident["status"] == "notifying" and incident["center_reports"] == []
    [forward] = sent_since(smtp, before)
    assert forward.recipients == (QA,)
    assert "cannot start after today" in words(forward.part("plain"))
