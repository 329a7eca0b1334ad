"""Nobody let in: scanners acknowledge nothing, closed incidents take no answers, hostile text is
escaped wherever it is shown, and pages carry security headers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape
from sqlalchemy import func
from sqlmodel import Session, select

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CapturedMessage, CaptureServer
from oos_notify.store.models import Acknowledgement, AuditEntry, Notification
from oos_notify.web.pages import BASELINE_HEADERS, SECURITY_HEADERS
from tests.conftest import (
    RunningService,
    ack_link,
    received,
    release_failure,
    service_settings,
    start_service,
)

LINK = re.compile(r"""https?://[^\s"'<>]+""")


def links_in(message: CapturedMessage) -> set[str]:
    """Every URL in both parts of a message, as a scanner would find them."""
    html = message.part("html").replace("&amp;", "&")
    return set(LINK.findall(message.part("plain"))) | set(LINK.findall(html))


async def incident(service: RunningService, incident_id: str) -> dict[str, Any]:
    response = await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


def counts(service: RunningService) -> tuple[int, int, int]:
    """Acknowledgements, audit entries and notifications stored."""
    with Session(service.services.engine) as session:
        return tuple(  # type: ignore[return-value]
            session.exec(select(func.count()).select_from(model)).one()
            for model in (Acknowledgement, AuditEntry, Notification)
        )


# --- mail security scanners ---------------------------------------------------------------------


async def test_a_scanner_opening_every_link_acknowledges_nothing_and_escalation_fires(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given an incident whose escalation has three steps, 2 and 4 business hours apart
    answer = await service.post_event(release_failure())
    incident_id = answer.json()["incident_id"]
    opened: set[str] = set()

    async def scan(messages: list[CapturedMessage]) -> None:
        """What a mail gateway does with each message that arrives: fetch every link."""
        for message in messages:
            for link in links_in(message):
                for method in ("GET", "HEAD"):
                    response = await service.client.request(method, link)
                    assert response.status_code < 500, (method, link)
                opened.add(link)

    # When a scanner opens every link of every message as it arrives, at each step
    await scan(await received(smtp, 3))
    clock.advance(timedelta(hours=2))
    await service.settle()
    await scan((await received(smtp, 5))[3:])
    clock.advance(timedelta(hours=2))
    await service.settle()
    final = (await received(smtp, 7))[5:]
    await scan(final)

    # Then it opened the personal links of the six center emails (the physician's first notice
    # and reminder each have one; the manufacturer's account lead gets none), and acknowledged
    # nothing
    assert sum("/ack/" in link for link in opened) == 6
    detail = await incident(service, incident_id)
    assert detail["acknowledgements"] == [] and detail["acknowledged_at"] is None
    # And the escalation went all the way to the final step
    assert detail["status"] == "escalated" and detail["escalation_level"] == 2
    assert {m.recipients[0] for m in final} == {
        "rx-director@mercy.example",
        "al-midwest@manufacturer.example",
    }


# --- links of closed incidents -------------------------------------------------------------------


@pytest.mark.parametrize("closing", ["resolved", "withdrawn"])
async def test_the_link_of_a_closed_incident_says_so_and_changes_nothing(
    service: RunningService, smtp: CaptureServer, clock: ManualClock, closing: str
) -> None:
    # Given a coordinator's link, and the incident then closed by QA
    answer = await service.post_event(release_failure())
    incident_id = answer.json()["incident_id"]
    link = ack_link(next(m for m in await received(smtp, 3) if "ct-coord@" in m.recipients[0]))
    closed = await service.post_event(
        release_failure(event_id="QA-EVT-2026-000199", type=closing, failed_attributes=[])
    )
    assert closed.status_code == 202, closed.text
    await service.settle()  # the emails so far, closing notices included, are recorded as sent
    before = counts(service)
    sent = len(smtp.handler.messages())

    # When the coordinator opens the link and confirms
    shown = await service.client.get(link)
    confirmed = await service.client.post(
        link, data={"response": "request_remanufacture", "comment": "too late?"}
    )

    # Then both pages say the incident is closed, and nothing is recorded or sent
    for page in (shown, confirmed):
        assert page.status_code == 200
        assert "This incident is closed" in page.text and closing in page.text
        assert "<form" not in page.text
    assert counts(service) == before
    clock.advance(timedelta(days=3))
    await service.settle()
    assert len(smtp.handler.messages()) == sent
    detail = await incident(service, incident_id)
    assert detail["status"] == closing and detail["acknowledgements"] == []


# --- hostile text --------------------------------------------------------------------------------

PAYLOADS = [
    "<script>alert('oos')</script>",
    '"><img src=x onerror=alert(1)>',
    "</textarea><svg onload=alert(1)>",
    "<a href='javascript:alert(1)'>details</a>",
    "{{ 7*191 }}{% raw %}<b>",
]


def assert_escaped(html: str, where: str) -> None:
    """No payload appears as markup; the HTML has every '<' of the payloads escaped."""
    for payload in PAYLOADS:
        assert payload not in html, f"{payload!r} unescaped in {where}"
    for tag in ("<script", "<img", "<svg", "<a href='javascript", "<b>"):
        assert tag not in html, f"{tag!r} in {where}"
    assert "1337" not in html, f"a payload was evaluated as a template in {where}"


@pytest.fixture
async def captured(tmp_path: Path, clock: ManualClock) -> AsyncIterator[RunningService]:
    """A service with no SMTP server configured: mail goes to the capture server and the mailbox."""
    running = await start_service(service_settings(tmp_path, None), clock)
    try:
        yield running
    finally:
        await running.stop()


async def test_html_in_every_free_text_field_is_escaped_in_emails_and_pages(
    captured: RunningService, clock: ManualClock
) -> None:
    service = captured
    capture = service.services.capture
    assert capture is not None
    p = PAYLOADS
    hostile_attribute = {"attribute": p[1], "specification": p[2], "result": p[3], "method": p[0]}
    pages: dict[str, str] = {}

    # Given every event type, each with markup in every free-text field it takes
    a = await service.post_event(
        release_failure(
            summary=p[0] + p[4],
            failed_attributes=[hostile_attribute],
            qa_contact={"name": p[1], "email": "qa@manufacturer.example"},
        )
    )
    assert a.status_code == 202, a.text
    b = await service.post_event(
        release_failure(
            event_id="QA-LATE-1",
            type="late_result",
            incident_ref="OOS-2026-0150",
            summary=p[2],
            failed_attributes=[{**hostile_attribute, "attribute": p[4]}],
            qa_contact={"name": p[3], "email": "qa@manufacturer.example"},
        )
    )
    assert b.status_code == 202, b.text
    await service.settle()
    update = {"type": "update", "summary": p[2], "failed_attributes": [hostile_attribute]}
    assert (await service.post_event(release_failure(event_id="U1", **update))).status_code == 202
    clock.advance(timedelta(hours=2))  # the reminders show the updated facts
    await service.settle()
    messages = capture.handler.messages()
    link_a = ack_link(next(m for m in messages if m.recipients == ("ct-coord@mercy.example",)))
    link_b = ack_link(
        next(
            m
            for m in messages
            if "OOS-2026-0150" in m.subject and m.recipients == ("ct-coord@mercy.example",)
        )
    )

    # And a coordinator who answers with markup in the comment
    pages["ack page"] = (await service.client.get(link_a)).text
    comment = {"response": "received", "comment": p[0] + p[1]}
    pages["confirmation"] = (await service.client.post(link_a, data=comment)).text
    pages["already acknowledged"] = (await service.client.get(link_a)).text
    for event_id, event_type, ref, extra in [
        ("D1", "disposition", "OOS-2026-0142", {"disposition": "oos_release_offered"}),
        ("R1", "resolved", "OOS-2026-0142", {}),
        ("W1", "withdrawn", "OOS-2026-0150", {}),
    ]:
        follow_up = release_failure(
            event_id=event_id, type=event_type, incident_ref=ref, summary=p[3], **extra
        )
        assert (await service.post_event(follow_up)).status_code == 202
    await service.settle()
    pages["closed incident page"] = (await service.client.get(link_b)).text

    # Then every HTML part of every email shows the text, escaped
    messages = capture.handler.messages()
    assert len(messages) >= 8
    for message in messages:
        assert_escaped(message.part("html"), f"the HTML part of {message.subject!r}")
    every_html = "".join(m.part("html") for m in messages)
    for payload in PAYLOADS:
        assert str(escape(payload)) in every_html, f"{payload!r} shown in no email"
    assert str(escape(p[0] + p[1])) in every_html  # the comment, in the QA receipt

    # And so does every page: acknowledgement, confirmation, the mailbox and each message in it
    pages["mailbox"] = (await service.client.get("/dev/mailbox")).text
    for message in messages:
        shown = await service.client.get(f"/dev/mailbox/{message.number}")
        pages[f"mailbox message {message.number}"] = shown.text
    for where, html in pages.items():
        assert_escaped(html, where)
    assert str(escape(p[0] + p[1])) in pages["already acknowledged"]
    assert str(escape(p[3])) in pages["closed incident page"]


# --- headers -------------------------------------------------------------------------------------


async def test_every_html_page_carries_the_security_headers(
    captured: RunningService,
) -> None:
    service = captured
    capture = service.services.capture
    assert capture is not None
    await service.post_event(release_failure())
    await service.settle()
    link = ack_link(capture.handler.messages()[0])
    number = capture.handler.messages()[0].number

    pages = {
        "ack page": await service.client.get(link),
        "refused link": await service.client.get("/ack/not-a-token"),
        "invalid answer": await service.client.post(link, data={"response": "bogus"}),
        "confirmation": await service.client.post(link, data={"response": "received"}),
        "mailbox": await service.client.get("/dev/mailbox"),
        "mailbox message": await service.client.get(f"/dev/mailbox/{number}"),
    }
    for where, page in pages.items():
        assert page.headers["content-type"].startswith("text/html"), where
        for name, value in SECURITY_HEADERS.items():
            assert page.headers.get(name) == value, (where, name)

    # FastAPI's own docs page and the JSON API carry the baseline
    for path in ("/docs", "/v1/incidents", "/healthz", "/no-such-page"):
        response = await service.client.get(path)
        for name, value in BASELINE_HEADERS.items():
            assert response.headers.get(name) == value, (path, name)


async def test_the_api_never_echoes_a_presented_key(service: RunningService) -> None:
    wrong = service.api_key[:-4] + "AAAA"
    for headers in ({"Authorization": f"Bearer {wrong}"}, {"Authorization": f"Basic {wrong}"}):
        response = await service.client.post("/v1/events", json={"x": 1}, headers=headers)
        assert response.status_code in (401, 422)
        assert wrong not in response.text and service.api_key not in response.text
    schema = (await service.client.get("/openapi.json")).text
    assert service.api_key not in schema
    assert service.services.settings.secret_key is not None
    assert service.services.settings.secret_key.get_secret_value() not in schema
