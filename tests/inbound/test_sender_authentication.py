"""A reply confirms only when the manufacturer's own receiving server found its sender
authenticated and aligned with the From domain; anything less is forwarded to QA as
unverified, or flagged, and never stops the escalation."""

from __future__ import annotations

from pathlib import Path

import pytest

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.return_addresses import Purpose
from oos_notify.settings import Settings
from tests.conftest import RunningService, start_service
from tests.inbound.conftest import COORDINATOR, QA, addresses, detail, open_incident, sent_since
from tests.inbound.mail import deliver, passed, reply

FORGERIES = {
    "no authentication results": (COORDINATOR, None, "forwarded"),
    "spf fail, dkim pass for another domain": (
        COORDINATOR,
        "mx.manufacturer.example; spf=fail smtp.mailfrom=mercy.example; "
        "dkim=pass header.d=evil.example header.s=s1",
        "flagged",
    ),
    "an address in the display name": (
        "ct-coord@mercy.example <attacker@evil.example>",
        "mx.manufacturer.example; spf=pass smtp.mailfrom=evil.example; "
        "dkim=pass header.d=evil.example; dmarc=pass header.from=evil.example",
        "flagged",
    ),
    "results from another server": (
        COORDINATOR,
        passed("mercy.example", "mx.evil.example"),
        "forwarded",
    ),
}


@pytest.mark.parametrize("case", FORGERIES)
async def test_a_received_that_nothing_trusted_authenticates_never_confirms(
    service: RunningService, smtp: CaptureServer, settings: Settings, case: str
) -> None:
    # Given a notice to the coordinator
    opened = await open_incident(service, smtp)
    to = addresses(service).address(opened.notification_id, Purpose.REPLY)
    before = smtp.handler.count
    sender, results, outcome = FORGERIES[case]

    # When "Received" arrives in the coordinator's name without trusted, aligned results
    forged = reply(sender, to, "Received, thanks.", authentication=results)
    await deliver(settings.inbound_smtp_port, forged, to, sender="attacker@evil.example")
    await service.settle()

    # Then nothing is acknowledged and the escalation goes on
    incident = await detail(service, opened.incident_id)
    assert incident["acknowledgements"] == [] and incident["status"] == "notifying"
    [mail] = incident["returned_mail"]
    assert mail["outcome"] == outcome
    new = sent_since(smtp, before)
    if outcome == "forwarded":
        # And QA reads it marked unverified, with why
        [forward] = new
        assert forward.recipients == (QA,)
        assert "its sender could not be verified" in " ".join(forward.part("plain").split())
        assert "UNVERIFIED: nothing proves this message is from" in forward.part("plain")
    else:
        assert new == []


async def test_a_received_the_own_server_passed_for_the_coordinators_domain_confirms(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    opened = await open_incident(service, smtp)
    to = addresses(service).address(opened.notification_id, Purpose.REPLY)
    # The relay of a hospital that forwards mail breaks SPF; its DKIM signature survives
    results = (
        "mx.manufacturer.example; spf=softfail smtp.mailfrom=relay.example; "
        "dkim=pass header.d=mercy.example header.s=s1; dmarc=pass header.from=mercy.example"
    )
    answer = reply(f"Dana <{COORDINATOR}>", to, "Received.", authentication=results)

    await deliver(settings.inbound_smtp_port, answer, to, sender=COORDINATOR)
    await service.settle()

    incident = await detail(service, opened.incident_id)
    assert incident["status"] == "acknowledged"
    assert incident["acknowledgements"][0]["by"] == COORDINATOR


async def test_without_the_receiving_servers_id_no_reply_confirms(
    tmp_path: Path, smtp: CaptureServer, settings: Settings, clock: ManualClock
) -> None:
    # Given a service that is not told which server's results to trust
    service = await start_service(settings.model_copy(update={"inbound_authserv_id": None}), clock)
    try:
        opened = await open_incident(service, smtp)
        to = addresses(service).address(opened.notification_id, Purpose.REPLY)
        before = smtp.handler.count

        # When the coordinator's "Received" arrives with results that would otherwise pass
        answer = reply(COORDINATOR, to, "Received.")
        await deliver(settings.inbound_smtp_port, answer, to, sender=COORDINATOR)
        await service.settle()

        # Then it is forwarded to QA as unverified, and confirms nothing
        incident = await detail(service, opened.incident_id)
        assert incident["status"] == "notifying"
        [forward] = sent_since(smtp, before)
        assert forward.recipients == (QA,) and "UNVERIFIED" in forward.part("plain")
        # And readiness says why
        ready = (await service.client.get("/readyz")).json()
        assert ready["checks"]["inbound"] == (
            "ok; no reply confirms: OOS_NOTIFY_INBOUND_AUTHSERV_ID is unset"
        )
    finally:
        await service.stop()
