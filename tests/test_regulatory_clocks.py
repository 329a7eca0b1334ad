"""Regulatory clocks over real HTTP and real SMTP on the controllable clock: an EU infusion of
an out-of-specification batch starts the 48 h authority notification, which reminds regulatory
affairs 12 h before it is due, escalates to QA when missed, and closes when QA posts the report's
reference; the manufacturer's deviation report counts 45 days from discovery."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from tests.conftest import START, RunningService, ack_link, release_failure
from tests.passkeys import enrol_and_decide
from tests.test_clinical import confirm, plain
from tests.test_lifecycle import REGULATORY, decision_request, detail, follow_up, post, timeline
from tests.test_pathway import EU_COORDINATOR, eu, offered

QA_DESK = "qa-release@manufacturer.example"
"""The manufacturer's QA role (manufacturer:qa), told when a report is overdue."""
REPORTED_BY = {"reported_by": "R. Weber", "email": "regulatory@manufacturer.example"}


def at(delta: timedelta) -> str:
    return (START + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def clocks(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["clock_id"]: c for c in state["regulatory_clocks"]}


async def infused_under_the_eu_route(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> str:
    """An EU product requested by the physician, shipped, and infused a day after the offer at
    START + 23 h, then resolved; its incident id."""
    incident_id = await offered(
        service,
        smtp,
        EU_COORDINATOR,
        oos_checklist=[{"item": "risk_evaluation", "reference": "RE-2026-0142"}],
    )
    link = ack_link(decision_request(smtp))
    signed = await enrol_and_decide(service.client, link, "accept_oos_product")
    assert signed.status_code == 200, signed.text
    await post(
        service,
        eu(confirm(201, ("physician_request", "REQ-2026-0142"), product_status="shipped")),
    )
    clock.advance(timedelta(days=1))
    await post(
        service,
        eu(
            confirm(
                202,
                ("consent", "ICF-2026-0142"),
                occurred_at=at(timedelta(days=1)),
                product_status="infused",
                infused_at=at(timedelta(hours=23)),
            )
        ),
    )
    await post(service, eu(follow_up("resolved", 203, occurred_at=at(timedelta(days=1)))))
    return incident_id


def about(smtp: CaptureServer, since: int, word: str) -> list[tuple[str, str]]:
    """(recipient, subject) of the messages after ``since`` whose subject has ``word``."""
    return sorted(
        (m.recipients[0], m.subject) for m in smtp.handler.messages()[since:] if word in m.subject
    )


async def test_an_eu_infusion_starts_a_48_hour_clock_that_reminds_and_escalates_on_time(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given an out-of-specification batch infused under the EU route at 14:12 UTC on day 1
    incident_id = await infused_under_the_eu_route(service, smtp, clock)

    # Then the incident shows the authority notification due 48 h after the infusion (and no
    # FDA deviation report: the center is not under US rules)
    state = await detail(service, incident_id)
    assert state["status"] == "resolved"
    found = clocks(state)
    notification = found["authority_notification"]
    assert (notification["started_by"], notification["state"]) == ("infused", "running")
    assert notification["started_at"] == "2026-11-25T14:12:00Z"
    assert notification["due_at"] == "2026-11-27T14:12:00Z"
    assert notification["owner"] == "manufacturer:regulatory_affairs"
    assert "EMA Q&A" in notification["source"]
    assert list(found) == ["authority_notification"]

    # When the clock stands a minute before the reminder (12 h before the due time)
    before = smtp.handler.count
    clock.advance(timedelta(hours=23, minutes=59))  # day 1 15:12 -> day 2 15:11
    await service.settle()
    clock.advance(timedelta(hours=10, minutes=59))  # -> day 3 02:10
    await service.settle()
    assert about(smtp, before, "Report") == []

    # Then at 02:12 regulatory affairs is reminded, and nobody else
    clock.advance(timedelta(minutes=2))
    await service.settle()
    [(recipient, subject)] = about(smtp, before, "Report")
    assert recipient == REGULATORY
    assert subject == "Report due Fri 27 Nov 2026, 15:12 CET: OOS-2026-0142, lot LOT-24-1187"
    [reminder] = [m for m in smtp.handler.messages()[before:] if m.recipients[0] == REGULATORY]
    text = plain(reminder)
    assert (
        "Report: Notification of EMA and the competent authorities that an OOS batch was "
        "administered" in text
    )
    assert "Started by: the infusion of the product, Wed 25 Nov 2026, 15:12 CET" in text
    assert "COI-8K2M-4471" in text and "COI-8K2M-4471" not in reminder.subject

    # When the due time passes without a report reference
    before = smtp.handler.count
    clock.advance(timedelta(hours=11, minutes=59))
    await service.settle()
    assert about(smtp, before, "Report") == []
    clock.advance(timedelta(minutes=1))
    await service.settle()

    # Then regulatory affairs and QA are told it is overdue, and the incident says so
    overdue = about(smtp, before, "Report overdue")
    assert [r for r, _ in overdue] == [QA_DESK, REGULATORY]
    assert "Was due: Fri 27 Nov 2026, 15:12 CET" in plain(
        next(m for m in smtp.handler.messages()[before:] if m.recipients[0] == QA_DESK)
    )
    assert clocks(await detail(service, incident_id))["authority_notification"]["state"] == (
        "overdue"
    )

    # When QA posts the reference of the notification that was filed late
    path = f"/v1/incidents/{incident_id}/regulatory-clocks/authority_notification/report"
    closed = await service.client.post(
        path, json={"report_reference": "EMA-OOS-2026-117", **REPORTED_BY}, headers=service.auth
    )

    # Then the clock is closed with it, and the trail says it was late
    assert closed.status_code == 200, closed.text
    assert (closed.json()["state"], closed.json()["report_reference"]) == (
        "closed",
        "EMA-OOS-2026-117",
    )
    entry = next(
        e for e in await timeline(service, incident_id) if e["action"] == "regulatory_clock_closed"
    )
    assert entry["detail"]["on_time"] is False


async def test_a_report_reference_closes_the_clock_and_cancels_what_waits(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given an EU infusion whose 48 h clock is running
    incident_id = await infused_under_the_eu_route(service, smtp, clock)
    path = f"/v1/incidents/{incident_id}/regulatory-clocks/authority_notification/report"

    # When QA posts the report's reference in time
    closed = await service.client.post(
        path, json={"report_reference": "EMA-OOS-2026-118", **REPORTED_BY}, headers=service.auth
    )
    assert closed.status_code == 200, closed.text

    # Then its reminder and escalation are cancelled, and nothing about it is ever sent
    state = await detail(service, incident_id)
    notices = [n for n in state["notifications"] if n["kind"] == "regulatory_clock"]
    assert len(notices) == 3  # the reminder; the escalation to regulatory affairs and to QA
    assert {n["status"] for n in notices} == {"cancelled"}
    before = smtp.handler.count
    clock.advance(timedelta(days=3))
    await service.settle()
    assert about(smtp, before, "Report") == []

    # And the same reference again changes nothing; another one is refused
    again = await service.client.post(
        path, json={"report_reference": "EMA-OOS-2026-118", **REPORTED_BY}, headers=service.auth
    )
    assert again.status_code == 200
    other = await service.client.post(
        path, json={"report_reference": "EMA-OOS-2026-999", **REPORTED_BY}, headers=service.auth
    )
    assert other.status_code == 409
    assert "closed with report 'EMA-OOS-2026-118'" in other.json()["detail"]


async def test_a_us_shipment_starts_the_deviation_report_counted_from_discovery(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given a US incident whose product has not left the manufacturer: no clock has started
    opened = await post(service, release_failure())
    incident_id = opened["incident_id"]
    path = f"/v1/incidents/{incident_id}/regulatory-clocks/deviation_report/report"
    missing = await service.client.post(
        path, json={"report_reference": "BPDR-1", **REPORTED_BY}, headers=service.auth
    )
    assert missing.status_code == 404
    assert (
        "has no clock 'deviation_report' running; its clocks: none yet" in missing.json()["detail"]
    )

    # When the lot is released within specification after all and shipped
    await post(
        service,
        follow_up(
            "disposition",
            201,
            disposition="released_within_spec",
            product_status="shipped",
            within_spec_basis={
                "assignable_cause": "Analyst error in the viability count.",
                "certificate_of_analysis": "COA-2026-0142",
            },
        ),
    )

    # Then the deviation report is due 45 days after the failure was discovered, not shipped
    found = clocks(await detail(service, incident_id))
    assert list(found) == ["deviation_report"]
    assert found["deviation_report"]["started_at"] == "2026-11-24T15:10:00Z"
    assert found["deviation_report"]["due_at"] == "2027-01-08T15:10:00Z"
    assert "21 CFR 600.14" in found["deviation_report"]["source"]

    # And a reference that is no document number is refused naming the field
    bad = await service.client.post(
        path, json={"report_reference": "two words", **REPORTED_BY}, headers=service.auth
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "report_reference"]
