"""The incident's timeline says what each follow-up changed, who posted it and why, and puts
each cause before what it brought about, folded under it."""

from __future__ import annotations

import re

from oos_notify.delivery.capture import CaptureServer
from tests.conftest import RunningService, ack_link, received, release_failure
from tests.console.conftest import MovedInfusion, People, browser, sign_in


def item_of(page: str, title: str) -> str:
    """The timeline entry whose title starts with ``title``, with what is folded under it."""
    start = page.index(f'<p class="title">{title}')
    opening = page.rindex('<li class="item', 0, start)
    depth, at = 0, opening
    for tag in re.finditer(r"<li\b|</li>", page[opening:]):
        depth += 1 if tag.group() == "<li" else -1
        if depth == 0:
            at = opening + tag.end()
            break
    return page[opening:at]


async def test_a_follow_up_entry_names_old_and_new_dates_its_author_and_why(
    moved_infusion: MovedInfusion, people: People
) -> None:
    incident_id, client = moved_infusion.incident_id, moved_infusion.client
    page = (await client.get(f"/console/incidents/{incident_id}")).text

    update = item_of(page, "Update received")
    assert 'Planned infusion: <span class="old">Thu 3 Dec 2026</span>' in update
    assert "<strong>Sat 5 Dec 2026</strong>" in update
    assert "Lymphodepletion start:" not in update  # unchanged: not listed
    assert f"<strong>Summary</strong>, by <bdi>{people.qa}</bdi>" in update
    assert "the patient&#39;s count recovered late" in update
    # The notices the update sent at once are under it, folded, not above it
    assert '<details class="effects"' in update
    assert "Follow-up notice to" in update
    assert page.index("Update received") < page.index("Follow-up notice to")
    # The facts say whose summary it is
    assert f"<strong>Summary</strong>, by <bdi>{people.qa}</bdi>" in page[: page.index("Timeline")]


async def test_what_a_confirmation_brought_about_comes_after_it_and_under_it(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = (await service.post_event(release_failure())).json()["incident_id"]
    await service.settle()
    first = await received(smtp, 3)
    coordinator = next(m for m in first if "ct-coord@mercy.example" in m.recipients)
    answered = await service.client.post(ack_link(coordinator), data={"response": "received"})
    assert answered.status_code == 200
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        page = (await client.get(f"/console/incidents/{incident_id}")).text

    confirmed = item_of(page, "Confirmed: Received")
    assert "Status changed to confirmed" in confirmed
    assert re.search(
        r"What it brought about \(\d+\): Status changed to confirmed; 6 emails cancelled",
        confirmed,
    )
    timeline = page[page.index("Timeline") :]
    assert timeline.index("Confirmed: Received") < timeline.index("Status changed to confirmed")
    # Nothing it brought about is left at the top level of the timeline
    outside = re.sub(r"<details.*?</details>", "", timeline, flags=re.S)
    assert "st-cancelled" not in outside and "Status changed to confirmed" not in outside


async def test_steps_a_follow_up_schedules_for_later_stay_below_the_now_line(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    posted = await service.post_event(release_failure())
    incident_id = posted.json()["incident_id"]
    await service.settle()
    await received(smtp, 3)
    offered = await service.post_event(
        {
            "event_id": "QA-EVT-OFFER",
            "type": "disposition",
            "incident_ref": "OOS-2026-0142",
            "occurred_at": "2026-11-24T15:12:00Z",
            "center_id": "mercy-general-main",
            "disposition": "oos_release_offered",
        }
    )
    assert offered.status_code == 202, offered.text
    await service.settle()
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        page = (await client.get(f"/console/incidents/{incident_id}")).text

    disposition = item_of(page, "Disposition received")
    assert 'Disposition: <span class="old">Under investigation</span>' in disposition
    assert "<strong>Out-of-specification release offered for physician decision</strong>" in (
        disposition
    )
    # What it sent at once is under it; what it scheduled for later is not
    assert "badge st-sent" in disposition
    assert "badge st-scheduled" not in disposition
    timeline = page[page.index("Timeline") :]
    later = timeline[timeline.index("now-line") :]
    assert "badge st-scheduled" in later
