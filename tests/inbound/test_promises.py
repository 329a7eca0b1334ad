"""The ``notify_within`` promise means delivery: a first notice that bounces counts against it
until a later notice to the same role is delivered. Mercy Health promises a major incident's
first notice within 4 h."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.return_addresses import Purpose
from oos_notify.settings import Settings
from tests.conftest import RunningService
from tests.inbound.conftest import (
    PHYSICIAN,
    addresses,
    detail,
    open_incident,
    sent_since,
    timeline,
    until,
)
from tests.inbound.mail import deliver, returned

CELL_LAB = "celllab@mercy.example"


async def bounce(
    service: RunningService, smtp: CaptureServer, settings: Settings, recipient: str
) -> None:
    """The first notice to ``recipient`` comes back undeliverable."""
    [notice] = [m for m in smtp.handler.messages() if m.recipients == (recipient,)]
    ntf = str(notice.message["X-OOS-Notification"])
    raw = returned("dsn-postfix-5.1.1.eml", addresses(service), ntf, recipient)
    await deliver(settings.inbound_smtp_port, raw, addresses(service).address(ntf, Purpose.BOUNCE))


async def promise(service: RunningService, incident_id: str) -> dict[str, Any]:
    state = await detail(service, incident_id)
    result: dict[str, Any] = state["notify_within"]
    return result


async def test_a_bounced_first_notice_leaves_the_promise_unmet(
    service: RunningService, smtp: CaptureServer, settings: Settings, clock: ManualClock
) -> None:
    # Given an incident whose first notices were handed to the mail server at once: met
    opened = await open_incident(service, smtp)
    incident_id = opened.incident_id
    assert (await promise(service, incident_id))["state"] == "met"

    # When the cell lab's first notice bounces ten minutes later
    clock.advance(timedelta(minutes=10))
    await bounce(service, smtp, settings, CELL_LAB)

    # Then the promise is no longer met: the cell lab was not reached, whoever else was
    async def reopened() -> bool:
        return (await promise(service, incident_id))["first_delivered_at"] is None

    await until(reopened)
    assert (await promise(service, incident_id))["state"] == "pending"
    entry = next(
        e for e in await timeline(service, incident_id) if e["action"] == "notify_within_reopened"
    )
    assert entry["detail"]["role"] == "cell_lab"

    # And once the deadline passes without a delivery to the cell lab, it is a breach, listed
    # as one, although the coordinator and the physician have their notices
    clock.advance(timedelta(hours=4))
    await service.settle()
    assert await promise(service, incident_id) == {
        "deadline": "2026-11-24T19:12:00Z",
        "first_delivered_at": None,
        "state": "breached",
    }
    listed = await service.client.get("/v1/incidents?breached=true", headers=service.auth)
    assert [i["incident_id"] for i in listed.json()["items"]] == [incident_id]


async def test_a_promise_is_met_when_a_later_notice_to_the_bounced_role_is_delivered(
    service: RunningService, smtp: CaptureServer, settings: Settings, clock: ManualClock
) -> None:
    # Given an incident whose first notices went out at 15:12 UTC
    opened = await open_incident(service, smtp)
    before = smtp.handler.count

    # When the physician's notice bounces at 15:42, which brings the physician's next one
    # forward at once
    clock.advance(timedelta(minutes=30))
    await bounce(service, smtp, settings, PHYSICIAN)
    await service.settle()

    # Then the promise is met when that later notice was delivered, not at the first hand-off
    assert PHYSICIAN in {m.recipients[0] for m in sent_since(smtp, before)}
    assert await promise(service, opened.incident_id) == {
        "deadline": "2026-11-24T19:12:00Z",
        "first_delivered_at": "2026-11-24T15:42:00Z",
        "state": "met",
    }
