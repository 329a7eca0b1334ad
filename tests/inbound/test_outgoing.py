"""What the mail going out says about the way back: the return addresses, and the header that
decides which automatic replies and non-delivery reports Exchange sends."""

from __future__ import annotations

from pathlib import Path

import pytest

from oos_notify.agreements.config import ConfigError
from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.return_addresses import Purpose
from oos_notify.web.app import create_app
from tests.conftest import RunningService, ack_link, service_settings, start_service
from tests.inbound.conftest import QA, addresses, open_incident, sent_since


async def test_each_notice_carries_its_own_reply_and_bounce_addresses(
    service: RunningService, smtp: CaptureServer
) -> None:
    opened = await open_incident(service, smtp)
    notice = opened.notice
    own = addresses(service)

    assert notice.message["Reply-To"] == own.address(opened.notification_id, Purpose.REPLY)
    assert notice.mail_from == own.address(opened.notification_id, Purpose.BOUNCE)
    # From the reply domain too: a Reply-To on the From's own domain is no spoof to a filter
    assert notice.message["From"].addresses[0].addr_spec == f"oos-notify@{own.domain}"
    assert notice.message_id.endswith(f"@{own.domain}>")
    assert notice.message["Auto-Submitted"] == "auto-generated"
    assert notice.message["X-Auto-Response-Suppress"] == "DR, RN, NRN"

    before = smtp.handler.count
    link = ack_link(notice)
    assert (await service.client.post(link, data={"response": "received"})).status_code == 200
    await service.settle()
    receipt = next(m for m in sent_since(smtp, before) if m.recipients == (QA,))
    # QA's replies go to MAIL_FROM, where people read them; its bounces still come back.
    assert receipt.message["Reply-To"] == "oos-notify@localhost"
    assert receipt.mail_from.startswith("bounce+")


async def test_without_a_reply_domain_the_mail_is_as_before(
    tmp_path: Path, smtp: CaptureServer, clock: ManualClock
) -> None:
    service = await start_service(service_settings(tmp_path, smtp), clock)
    try:
        opened = await open_incident(service, smtp)
    finally:
        await service.stop()
    assert opened.notice.message["Reply-To"] is None
    assert opened.notice.mail_from == "oos-notify@localhost"
    assert opened.notice.message["X-Auto-Response-Suppress"] == "All"
    assert service.services.return_addresses is None and service.services.inbound is None


def test_inbound_settings_that_lack_something_are_refused_by_name(
    tmp_path: Path, smtp: CaptureServer
) -> None:
    settings = service_settings(tmp_path, smtp, inbound="imap", inbound_imap_username="returns")
    with pytest.raises(ConfigError) as refused:
        create_app(settings)
    assert [p.field for p in refused.value.problems] == [
        "OOS_NOTIFY_REPLY_DOMAIN",
        "OOS_NOTIFY_INBOUND_IMAP_HOST",
        "OOS_NOTIFY_INBOUND_IMAP_PASSWORD",
    ]
