"""An email reply from a shared mailbox names nobody: it is recorded as the mailbox's, and the
record says so."""

from __future__ import annotations

from pathlib import Path

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.return_addresses import Purpose
from oos_notify.settings import Settings
from tests.conftest import start_service
from tests.inbound.conftest import (
    COORDINATOR,
    QA,
    addresses,
    detail,
    open_incident,
    sent_since,
    timeline,
)
from tests.inbound.mail import deliver, reply
from tests.shared_mailboxes import shared_coordinator_config

BY_THE_MAILBOX = f"confirmed by the shared mailbox {COORDINATOR}"


async def test_a_reply_from_a_shared_mailbox_is_recorded_as_the_mailboxs(
    settings: Settings, smtp: CaptureServer, clock: ManualClock, tmp_path: Path
) -> None:
    config = shared_coordinator_config(tmp_path)
    service = await start_service(settings.model_copy(update={"config_dir": config}), clock)
    try:
        opened = await open_incident(service, smtp)
        to = addresses(service).address(opened.notification_id, Purpose.REPLY)
        before = smtp.handler.count

        # When the shared mailbox replies "Received"
        answer = reply(f"Cell Therapy Coordinator <{COORDINATOR}>", to, "Received, thanks.")
        await deliver(settings.inbound_smtp_port, answer, to, sender=COORDINATOR)
        await service.settle()

        # Then it acknowledges, recorded as the mailbox's, naming no person
        incident = await detail(service, opened.incident_id)
        assert incident["status"] == "acknowledged"
        [ack] = incident["acknowledgements"]
        assert (ack["by"], ack["confirmed_by"]) == (COORDINATOR, None)
        [entry] = [
            e for e in await timeline(service, opened.incident_id) if e["action"] == "acknowledged"
        ]
        assert entry["detail"]["attribution"] == BY_THE_MAILBOX
        receipt = next(m for m in sent_since(smtp, before) if m.recipients == (QA,))
        assert f"Who:              {BY_THE_MAILBOX}" in receipt.part("plain")
    finally:
        await service.stop()
