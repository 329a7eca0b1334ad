"""QA's follow-ups from the console go through the API's own ingest: the same notifications,
the same refusals with the field named, and the person who posted them in the audit trail."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlmodel import Session, col, select

from oos_notify.delivery.capture import CaptureServer
from oos_notify.store.models import AuditEntry, Event, Notification
from tests.conftest import RunningService, received, release_failure
from tests.console.conftest import People, browser, csrf_token, sign_in

COORDINATOR = "ct-coord@mercy.example"
CELL_LAB = "celllab@mercy.example"
PHYSICIAN = "ct-md@mercy.example"


async def opened(service: RunningService, smtp: CaptureServer) -> str:
    incident_id = (await service.post_event(release_failure())).json()["incident_id"]
    await service.settle()
    await received(smtp, 3)
    return str(incident_id)


async def post(client: httpx.AsyncClient, incident_id: str, **fields: Any) -> httpx.Response:
    """Post a follow-up form as the incident page has it: its event id and CSRF token."""
    page = await client.get(f"/console/incidents/{incident_id}")
    offered = re.search(r'name="event_id" value="([^"]+)"', page.text)
    event_id = offered.group(1) if offered else "console-from-an-old-page"
    form = {"csrf_token": csrf_token(page), "event_id": event_id, **fields}
    return await client.post(f"/console/incidents/{incident_id}/events", data=form)


def confirmed_form(review: httpx.Response) -> dict[str, str]:
    """The confirmation step's form, as its button posts it."""
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', review.text))


def liaison_alerts(service: RunningService, incident_id: str) -> set[tuple[str, str]]:
    with Session(service.services.engine) as session:
        rows = session.exec(
            select(Notification).where(
                Notification.incident_id == incident_id,
                Notification.template == "patient_liaison_urgent",
            )
        ).all()
    return {(n.status, n.due_at.isoformat()) for n in rows}


async def test_moving_a_key_date_from_the_console_moves_its_step_and_tells_those_told(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await opened(service, smtp)
    async with browser(service) as client:
        await sign_in(client, people.qa)
        answer = await post(
            client,
            incident_id,
            type="update",
            key_date_lymphodepletion_start="2026-12-07",
            key_date_planned_infusion="2026-12-03",  # unchanged: not sent as news
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/console/incidents/{incident_id}?posted=update"
        await service.settle()

    assert liaison_alerts(service, incident_id) == {
        ("cancelled", "2026-11-28T06:00:00+00:00"),
        ("scheduled", "2026-12-05T06:00:00+00:00"),
    }
    updates = (await received(smtp, 6))[3:]
    assert sorted(m.recipients[0] for m in updates) == [CELL_LAB, COORDINATOR, PHYSICIAN]
    assert "Mon 07 Dec 2026" in updates[0].part("plain")
    with Session(service.services.engine) as session:
        [event] = session.exec(select(Event).where(Event.type == "update")).all()
        assert event.payload["key_dates"] == {"lymphodepletion_start": "2026-12-07"}
        posted = session.exec(
            select(AuditEntry).where(AuditEntry.action == "console_event_posted")
        ).one()
    assert (posted.actor, posted.incident_id) == (people.qa, incident_id)
    assert posted.detail == {"event_id": event.event_id, "type": "update"}


async def test_offering_the_product_from_the_console_asks_the_physician_to_decide(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await opened(service, smtp)
    async with browser(service) as client:
        await sign_in(client, people.qa)
        review = await post(
            client, incident_id, type="disposition", disposition="oos_release_offered"
        )
        # Nothing is recorded before QA has seen what will be recorded and sent, and confirmed
        assert review.status_code == 200 and "Record this disposition?" in review.text
        assert "Out-of-specification release offered for physician decision" in review.text
        assert "Decision request" in review.text and PHYSICIAN in review.text
        with Session(service.services.engine) as session:
            assert session.exec(select(Event).where(Event.type == "disposition")).all() == []
        answer = await client.post(
            f"/console/incidents/{incident_id}/events", data=confirmed_form(review)
        )
        assert answer.status_code == 303
        await service.settle()
        page = await client.get(f"/console/incidents/{incident_id}")
    # The physician was told in the first step too: the request is the decision's email
    messages = await received(smtp, 6)
    asks = [m for m in messages if m.subject.startswith("Decision needed: ")]
    assert [m.recipients for m in asks] == [(PHYSICIAN,)] and "/ack/" in asks[0].part("plain")
    assert "decision awaited" in page.text


async def test_a_form_posted_twice_records_one_event(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await opened(service, smtp)
    async with browser(service) as client:
        await sign_in(client, people.qa)
        page = await client.get(f"/console/incidents/{incident_id}")
        event_id = re.search(r'name="event_id" value="([^"]+)"', page.text)
        assert event_id
        form = {
            "csrf_token": csrf_token(page),
            "event_id": event_id.group(1),
            "type": "update",
            "summary": "Second viability assay scheduled.",
        }
        for _ in range(2):
            answer = await client.post(f"/console/incidents/{incident_id}/events", data=form)
            assert answer.status_code == 303
    with Session(service.services.engine) as session:
        assert len(session.exec(select(Event).where(Event.type == "update")).all()) == 1
        posted = session.exec(
            select(AuditEntry).where(AuditEntry.action == "console_event_posted")
        ).all()
    assert len(posted) == 1


async def test_refusals_name_the_field_and_record_nothing(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await opened(service, smtp)
    async with browser(service) as client:
        await sign_in(client, people.qa)
        nothing_new = await post(
            client, incident_id, type="update", key_date_planned_infusion="2026-12-03"
        )
        assert nothing_new.status_code == 422
        assert "key_dates: change a key date or write a summary" in nothing_new.text
        unconfirmed = await post(client, incident_id, type="resolved")
        assert unconfirmed.status_code == 422
        assert "confirm: tick the box" in unconfirmed.text
        bad_date = await post(client, incident_id, type="update", key_date_apheresis="1999-01-01")
        assert bad_date.status_code == 422
        assert "key_dates.apheresis" in bad_date.text
        closed = await post(client, incident_id, type="withdrawn", confirm="1")
        assert closed.status_code == 303
        again = await post(client, incident_id, type="resolved", confirm="1")
        assert again.status_code == 409
        assert "is withdrawn; it accepts no further events" in again.text
    with Session(service.services.engine) as session:
        types = session.exec(select(Event.type).order_by(col(Event.received_at))).all()
    assert types == ["release_failure", "withdrawn"]
