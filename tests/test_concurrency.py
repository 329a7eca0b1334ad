"""Many requests at once, as a lot-wide failure produces: no 5xx, nothing doubled, one winner."""

from __future__ import annotations

import asyncio

from sqlmodel import Session, func, select

from oos_notify.delivery.capture import CaptureServer
from oos_notify.store.models import Acknowledgement, Event, Incident, Notification
from tests.conftest import RunningService, ack_link, received, release_failure


def count(service: RunningService, model: type) -> int:
    with Session(service.services.engine) as db:
        return int(db.exec(select(func.count()).select_from(model)).one())


async def test_a_burst_of_events_is_accepted_whole_while_mail_goes_out(
    service: RunningService, smtp: CaptureServer
) -> None:
    events = [
        release_failure(event_id=f"QA-EVT-{n}", incident_ref=f"OOS-{n}", lot_number=f"LOT-{n}")
        for n in range(60)
    ]
    answers = await asyncio.gather(*(service.post_event(e) for e in events))

    assert sorted({a.status_code for a in answers}) == [202], [a.text for a in answers][:3]
    assert count(service, Incident) == 60 and count(service, Event) == 60
    await received(smtp, 180, timeout=60)
    await service.settle()
    with Session(service.services.engine) as db:
        sent = db.exec(select(Notification).where(Notification.status == "sent")).all()
    assert len(sent) == 180 == len({m.message_id for m in smtp.handler.messages()})


async def test_the_same_event_posted_concurrently_opens_one_incident(
    service: RunningService, smtp: CaptureServer
) -> None:
    answers = await asyncio.gather(*(service.post_event(release_failure()) for _ in range(12)))

    assert sorted(a.status_code for a in answers) == [200] * 11 + [202]
    assert len({a.json()["incident_id"] for a in answers}) == 1
    assert sum(a.json()["duplicate"] for a in answers) == 11
    assert count(service, Incident) == 1 and count(service, Event) == 1
    await received(smtp, 3)
    await service.settle()
    assert len(smtp.handler.messages()) == 3


async def test_two_coordinators_confirming_at_once_record_one_acknowledgement(
    service: RunningService, smtp: CaptureServer
) -> None:
    await service.post_event(release_failure())
    # The coordinator and the physician: either one's confirmation stops the escalation
    links = [
        ack_link(m)
        for m in await received(smtp, 3)
        if m.recipients[0] in ("ct-coord@mercy.example", "ct-md@mercy.example")
    ]

    pages = await asyncio.gather(
        *(service.client.post(link, data={"response": "received"}) for link in links * 3)
    )

    assert {p.status_code for p in pages} == {200}
    assert sum("Thank you" in p.text for p in pages) == 1
    assert count(service, Acknowledgement) == 1
    # one QA receipt and one liaison brief, not one per confirmation
    await received(smtp, 5)
    await service.settle()
    assert len(smtp.handler.messages()) == 5
