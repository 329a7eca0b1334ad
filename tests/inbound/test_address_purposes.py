"""Each return address does only its own job: the reply address takes replies, the bounce
address delivery reports. What arrives at the other one is shown and changes nothing."""

from __future__ import annotations

from oos_notify.delivery.capture import CaptureServer
from oos_notify.return_addresses import Purpose
from oos_notify.settings import Settings
from tests.conftest import RunningService
from tests.inbound.conftest import (
    COORDINATOR,
    addresses,
    detail,
    open_incident,
    sent_since,
    timeline,
)
from tests.inbound.mail import deliver, reply, returned


async def test_a_bounce_sent_to_the_reply_address_fails_nothing_and_shows(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    # Given a notice, and a delivery report made out for it but sent to its reply address
    opened = await open_incident(service, smtp)
    to = addresses(service).address(opened.notification_id, Purpose.REPLY)
    before = smtp.handler.count
    bounce = returned("dsn-postfix-5.1.1.eml", addresses(service), opened.notification_id)

    # When it arrives
    await deliver(settings.inbound_smtp_port, bounce, to)
    await service.settle()

    # Then the notice stays sent, QA is not told, nothing is brought forward
    incident = await detail(service, opened.incident_id)
    notice = next(
        n for n in incident["notifications"] if n["notification_id"] == opened.notification_id
    )
    assert notice["status"] == "sent"
    assert sent_since(smtp, before) == []
    # And it shows as misdirected
    [mail] = incident["returned_mail"]
    assert (mail["kind"], mail["outcome"]) == ("bounce", "misdirected")
    [entry] = [
        e
        for e in await timeline(service, opened.incident_id)
        if e["action"] == "returned_mail_misdirected"
    ]
    assert entry["detail"]["reason"] == (
        "a delivery report sent to the reply address, which takes replies only"
    )


async def test_received_sent_to_the_bounce_address_acknowledges_nothing_and_shows(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    # Given a notice, and the coordinator's authenticated "Received" sent to its bounce address
    opened = await open_incident(service, smtp)
    to = addresses(service).address(opened.notification_id, Purpose.BOUNCE)
    before = smtp.handler.count

    # When it arrives
    await deliver(
        settings.inbound_smtp_port, reply(COORDINATOR, to, "Received."), to, sender=COORDINATOR
    )
    await service.settle()

    # Then nothing is acknowledged or forwarded, and it shows as misdirected
    incident = await detail(service, opened.incident_id)
    assert incident["acknowledgements"] == [] and incident["status"] == "notifying"
    assert sent_since(smtp, before) == []
    [mail] = incident["returned_mail"]
    assert (mail["kind"], mail["outcome"]) == ("reply", "misdirected")
    [entry] = [
        e
        for e in await timeline(service, opened.incident_id)
        if e["action"] == "returned_mail_misdirected"
    ]
    assert entry["actor"] == COORDINATOR
    assert entry["detail"]["reason"] == (
        "a reply sent to the bounce address, which takes delivery reports only"
    )
