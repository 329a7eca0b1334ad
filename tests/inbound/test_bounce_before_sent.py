"""A bounce that comes back before its notice's send is recorded: a local relay can deliver its
own bounce within milliseconds of answering 250, while the dispatcher still records that 250.
Handled at once, the bounce would find the notice ``sending``, change nothing, and be lost."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest
from sqlalchemy import text

from oos_notify.delivery.capture import CaptureServer
from oos_notify.return_addresses import Purpose
from oos_notify.settings import Settings
from tests.conftest import RunningService
from tests.inbound.conftest import COORDINATOR, Opened, addresses, detail, open_incident
from tests.inbound.mail import deliver, returned


def set_status(service: RunningService, notification_id: str, status: str) -> None:
    """Put the notice in the state the dispatcher has it in, as its own commit would."""
    with service.services.engine.begin() as db:
        db.execute(
            text("UPDATE notifications SET status = :status WHERE id = :id"),
            {"status": status, "id": notification_id},
        )


async def bounce_while_sending(
    service: RunningService, smtp: CaptureServer
) -> tuple[Opened, bytes, str]:
    """An incident whose first notice to the coordinator is still ``sending``, the bounce the
    relay has for it (user unknown) and the bounce address it goes to."""
    opened = await open_incident(service, smtp)
    set_status(service, opened.notification_id, "sending")
    bounce = returned(
        "dsn-postfix-5.1.1.eml", addresses(service), opened.notification_id, COORDINATOR
    )
    return opened, bounce, addresses(service).address(opened.notification_id, Purpose.BOUNCE)


async def test_a_bounce_for_a_notice_still_sending_fails_it_once_the_send_is_recorded(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    opened, bounce, bounce_to = await bounce_while_sending(service, smtp)

    delivering = asyncio.create_task(deliver(settings.inbound_smtp_port, bounce, bounce_to))
    # The listener reads the message (in a process of its own), then tries again for 3.15 s
    # before it answers 451: 2.5 s in, it still waits
    await asyncio.sleep(2.5)
    assert not delivering.done()
    set_status(service, opened.notification_id, "sent")
    await asyncio.wait_for(delivering, timeout=30)  # then accepts it: 250
    await service.settle()

    incident = await detail(service, opened.incident_id)
    notice = next(
        n for n in incident["notifications"] if n["notification_id"] == opened.notification_id
    )
    assert notice["status"] == "failed" and "5.1.1" in notice["last_error"]
    [mail] = incident["returned_mail"]
    assert (mail["kind"], mail["outcome"]) == ("bounce", "notice_failed")


async def test_a_bounce_whose_send_is_never_recorded_is_left_to_the_relay_to_retry(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    opened, bounce, bounce_to = await bounce_while_sending(service, smtp)

    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await deliver(settings.inbound_smtp_port, bounce, bounce_to)

    assert refused.value.code == 451
    assert (await detail(service, opened.incident_id))["returned_mail"] == []

    # The relay's next try, after the send is recorded, fails the notice
    set_status(service, opened.notification_id, "sent")
    await deliver(settings.inbound_smtp_port, bounce, bounce_to)
    await service.settle()
    [mail] = (await detail(service, opened.incident_id))["returned_mail"]
    assert (mail["kind"], mail["outcome"]) == ("bounce", "notice_failed")
