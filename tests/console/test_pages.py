"""Every console page renders for a real incident, as the service keeps it."""

from __future__ import annotations

from oos_notify.delivery.capture import CaptureServer
from tests.conftest import RunningService, ack_link, received, release_failure
from tests.console.conftest import People, browser, sign_in


async def test_every_page_renders(
    service: RunningService, people: People, smtp: CaptureServer
) -> None:
    posted = await service.post_event(release_failure())
    incident_id = posted.json()["incident_id"]
    await service.settle()
    first = await received(smtp, 2)
    await service.client.post(ack_link(first[0]), data={"response": "received"})
    await service.settle()
    async with browser(service) as client:
        await sign_in(client, people.qa)
        pages = [
            "/console",
            "/console/board/rows",
            f"/console/incidents/{incident_id}",
            f"/console/incidents/{incident_id}/live",
            f"/console/incidents/{incident_id}/record",
            f"/console/incidents/{incident_id}/record.pdf",
            "/console/centers",
            "/console/centers/mercy-general-main",
            "/console/centers/rhein-uk-bonn?event_type=late_result&severity=critical",
            "/console/reports",
            "/console/reports/time-to-confirm.csv",
            "/console/reports/notify-within.csv",
        ]
        for url in pages:
            response = await client.get(url)
            assert response.status_code == 200, (url, response.text[-2000:])
        detail = await client.get(f"/console/incidents/{incident_id}")
        print(detail.text)
