"""The center speaks from its link: over real HTTP and real SMTP, a notice's recipient tells the
manufacturer that lymphodepletion started or was postponed, that the product arrived, or asks
to be called; each is recorded with its author, changes what it changes and reaches QA."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CapturedMessage, CaptureServer
from tests.conftest import START, RunningService, ack_link, received, release_failure

QA = "qa@manufacturer.example"
QA_DESK = "qa-release@manufacturer.example"
COORDINATOR = "ct-coord@mercy.example"
TODAY = START.date()  # Tue 24 Nov 2026 in Chicago too: 09:12 there


async def _opened(service: RunningService, smtp: CaptureServer) -> tuple[str, str]:
    """A release failure whose first notices went out; its id and the coordinator's link."""
    answer = await service.post_event(release_failure())
    assert answer.status_code == 202, answer.text
    first = await received(smtp, 3)
    coordinator = next(m for m in first if m.recipients == (COORDINATOR,))
    return answer.json()["incident_id"], ack_link(coordinator)


async def _detail(service: RunningService, incident_id: str) -> dict[str, Any]:
    answer = await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _timeline(service: RunningService, incident_id: str) -> list[dict[str, Any]]:
    answer = await service.client.get(f"/v1/incidents/{incident_id}/timeline", headers=service.auth)
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = answer.json()
    return entries


def _new(smtp: CaptureServer, before: int) -> list[CapturedMessage]:
    return smtp.handler.messages()[before:]


async def test_lymphodepletion_started_from_the_link_moves_the_date_and_tells_qa(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given a release failure whose lymphodepletion was planned six days out
    incident_id, link = await _opened(service, smtp)
    page = await service.client.get(link)
    assert page.status_code == 200
    assert "Tell Example Therapeutics about the treatment" in page.text
    assert 'name="kind" value="lymphodepletion_started"' in page.text

    # When the coordinator says on the page that it started today
    clock.advance(timedelta(minutes=20))
    answer = await service.client.post(
        link,
        data={"kind": "lymphodepletion_started", "day": TODAY.isoformat(), "comment": "Flu/Cy"},
    )

    # Then the page says who was told what, and the incident's date moved
    assert answer.status_code == 200, answer.text
    assert "has been told: Lymphodepletion started on Tue 24 Nov 2026" in answer.text
    detail = await _detail(service, incident_id)
    assert detail["key_dates"]["lymphodepletion_start"] == TODAY.isoformat()
    [report] = detail["center_reports"]
    assert report["kind"] == "lymphodepletion_started" and report["by"] == COORDINATOR
    assert report["source"] == "link" and report["event_id"]
    # And, with lymphodepletion under way, the rules make the incident critical, as an update
    # from QA would; the confirmation is still awaited
    assert detail["severity"] == "critical"
    assert detail["status"] in ("notifying", "escalated")

    # And the timeline names the coordinator as the author of the report and of the change
    timeline = await _timeline(service, incident_id)
    reported = next(e for e in timeline if e["action"] == "center_reported")
    assert reported["actor"] == COORDINATOR
    assert reported["detail"]["kind"] == "lymphodepletion_started"
    updated = next(e for e in timeline if e["action"] == "incident_updated")
    assert updated["actor"] == COORDINATOR
    assert updated["detail"]["key_dates"] == {"lymphodepletion_start": TODAY.isoformat()}

    # And QA hears of it at once, and everyone told hears of the new date
    await service.settle()
    new = _new(smtp, 3)
    to_qa = [m for m in new if m.recipients == (QA,)]
    assert [m.subject for m in to_qa] == [
        "Check the dates, lymphodepletion started: OOS-2026-0142, lot LOT-24-1187"
    ]
    text = to_qa[0].part("plain")
    assert "reports: Lymphodepletion started, on Tue 24 Nov 2026" in text
    assert "Cell Therapy Coordinator <ct-coord@mercy.example>" in text and "Flu/Cy" in text
    updates = {m.recipients[0] for m in new if m.subject.startswith("Check the key dates")}
    assert {COORDINATOR, "ct-md@mercy.example", "celllab@mercy.example"} <= updates
    assert all(len(m.subject) <= 78 for m in new)


async def test_please_call_me_from_the_link_asks_qa_to_call_with_number_and_window(
    service: RunningService, smtp: CaptureServer
) -> None:
    incident_id, link = await _opened(service, smtp)

    # When the coordinator asks to be called on another number, in the afternoon
    answer = await service.client.post(
        link,
        data={
            "kind": "call_me",
            "phone": "+1 312 555 0199",
            "call_from": "14:00",
            "call_until": "16:00",
        },
    )

    # Then the page says QA will call, and QA's email asks for the call, number and window
    assert answer.status_code == 200, answer.text
    assert "asked to call you on +1 312 555 0199, 14:00-16:00 (America/Chicago)" in answer.text
    await service.settle()
    [to_qa] = [m for m in _new(smtp, 3) if m.recipients == (QA,)]
    assert to_qa.subject == "Call the center back: OOS-2026-0142, lot LOT-24-1187"
    text = to_qa.part("plain")
    assert "CALL BACK: Cell Therapy Coordinator (coordinator)" in text
    assert "on +1 312 555 0199, between 14:00-16:00 (America/Chicago)" in text
    assert 'href="tel:' in to_qa.part("html")

    # And the request is on the timeline as the service's callback request, by its author
    timeline = await _timeline(service, incident_id)
    request = next(e for e in timeline if e["action"] == "callback_requested")
    assert request["actor"] == COORDINATOR
    assert request["detail"]["phone"] == "+1 312 555 0199"
    assert request["detail"]["call_window"] == "14:00-16:00"
    # And a call task is open for the QA desk, with the number and the window to call in,
    # whose email is the only other message
    tasks = await service.client.get(
        "/v1/call-tasks", params={"incident_id": incident_id}, headers=service.auth
    )
    [task] = tasks.json()
    assert task["status"] == "open" and task["caller_role"] == "manufacturer:qa"
    assert task["reason"] == (
        "Cell Therapy Coordinator (coordinator) asked to be called back, 14:00-16:00 (center time)"
    )
    assert [(n["name"], n["phone"]) for n in task["numbers"]] == [
        ("Cell Therapy Coordinator", "+1 312 555 0199")
    ]
    [to_desk] = [m for m in _new(smtp, 3) if m.recipients != (QA,)]
    assert to_desk.recipients == (QA_DESK,)
    assert to_desk.subject == "Call the center now: OOS-2026-0142, lot LOT-24-1187"
    assert "+1 312 555 0199" in to_desk.part("plain")
    # And nothing about the treatment changed: nothing is confirmed
    detail = await _detail(service, incident_id)
    assert detail["status"] == "notifying" and detail["acknowledgements"] == []


async def test_please_call_me_without_a_number_uses_the_one_on_file(
    service: RunningService, smtp: CaptureServer
) -> None:
    incident_id, link = await _opened(service, smtp)
    answer = await service.client.post(link, data={"kind": "call_me"})
    assert answer.status_code == 200, answer.text
    assert "on +1 312 555 0142 as soon as possible" in answer.text
    [report] = (await _detail(service, incident_id))["center_reports"]
    assert report["phone"] == "+1 312 555 0142" and report["call_window"] is None


async def test_postponed_and_product_received_change_the_facts(
    service: RunningService, smtp: CaptureServer
) -> None:
    incident_id, link = await _opened(service, smtp)
    later = TODAY + timedelta(days=12)
    postponed = await service.client.post(
        link, data={"kind": "lymphodepletion_postponed", "day": later.isoformat()}
    )
    assert postponed.status_code == 200, postponed.text
    assert "Lymphodepletion postponed to " in postponed.text
    received_ = await service.client.post(link, data={"kind": "product_received"})
    assert received_.status_code == 200, received_.text
    detail = await _detail(service, incident_id)
    assert detail["key_dates"]["lymphodepletion_start"] == later.isoformat()
    assert detail["product_status"] == "at_center"
    assert [r["kind"] for r in detail["center_reports"]] == [
        "lymphodepletion_postponed",
        "product_received",
    ]
    await service.settle()
    subjects = [m.subject for m in _new(smtp, 3) if m.recipients == (QA,)]
    assert subjects == [
        "Check the dates, lymphodepletion postponed: OOS-2026-0142, lot LOT-24-1187",
        "Check the status, product received: OOS-2026-0142, lot LOT-24-1187",
    ]


async def test_reports_the_page_cannot_take_get_a_clear_refusal(
    service: RunningService, smtp: CaptureServer
) -> None:
    incident_id, link = await _opened(service, smtp)
    tomorrow = (TODAY + timedelta(days=1)).isoformat()
    cases = [
        ({"kind": "lymphodepletion_started", "day": tomorrow}, 422, "cannot start after today"),
        ({"kind": "lymphodepletion_postponed"}, 422, "Give the date."),
        ({"kind": "lymphodepletion_started", "day": "24/11/2026"}, 422, "year-month-day"),
        ({"kind": "rescheduled"}, 422, "Choose what you are telling us."),
        ({"kind": "call_me", "phone": "call me"}, 422, "digits, spaces"),
        ({"kind": "call_me", "call_from": "25:00"}, 422, "hours and minutes"),
    ]
    for data, status, words in cases:
        answer = await service.client.post(link, data=data)
        assert answer.status_code == status, (data, answer.text)
        assert words in answer.text, (data, answer.text)
    forged = await service.client.post(link[:-3] + "abc", data={"kind": "product_received"})
    assert forged.status_code == 400
    detail = await _detail(service, incident_id)
    assert detail["center_reports"] == [] and detail["events"][1:] == []

    # A closed incident takes no more reports
    withdrawn = release_failure(event_id="QA-EVT-2", type="withdrawn")
    assert (await service.post_event(withdrawn)).status_code == 202
    closed = await service.client.post(link, data={"kind": "product_received"})
    assert closed.status_code == 409 and "withdrawn" in closed.text
