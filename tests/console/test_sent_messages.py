"""Each email as it was sent: the bytes the mail server received, kept and shown from the
incident with its delivery attempts and what came back; read by any role, refused to no one
signed in, and only under its own incident."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlmodel import Session, select

from oos_notify.delivery.capture import CaptureServer, free_port
from oos_notify.return_addresses import Purpose
from oos_notify.settings import Settings
from oos_notify.store.models import Notification, SentMessage
from oos_notify.web.console.sent import masked
from tests.conftest import ACK_LINK, RunningService, received, release_failure
from tests.console.conftest import People, browser, sign_in
from tests.inbound.conftest import addresses, listener_settings, until
from tests.inbound.mail import deliver, returned

CELL_LAB = "celllab@mercy.example"


@pytest.fixture
def listener_port() -> int:
    return free_port()


@pytest.fixture
def settings(tmp_path: Path, smtp: CaptureServer, listener_port: int) -> Settings:
    """Return addresses and a listener, so that a bounce comes back to the service."""
    return listener_settings(tmp_path, smtp, listener_port)


async def opened(service: RunningService, smtp: CaptureServer, ref: str) -> str:
    answer = await service.post_event(release_failure(event_id=f"E-{ref}", incident_ref=ref))
    assert answer.status_code == 202, answer.text
    await service.settle()
    return str(answer.json()["incident_id"])


def sent_to(smtp: CaptureServer, recipient: str, ref: str) -> tuple[str, bytes, str]:
    """The notification id, the raw bytes and the Message-ID the mail server got."""
    [mail] = [
        m for m in smtp.handler.messages() if m.recipients == (recipient,) and ref in m.subject
    ]
    return str(mail.message["X-OOS-Notification"]), mail.raw, mail.message_id


async def test_a_sent_email_is_shown_as_the_mail_server_received_it(
    service: RunningService, smtp: CaptureServer, settings: Settings, people: People
) -> None:
    incident_id = await opened(service, smtp, "OOS-SENT")
    await received(smtp, 3)
    notification_id, raw, message_id = sent_to(smtp, CELL_LAB, "OOS-SENT")
    with Session(service.services.engine) as session:
        kept = session.get(SentMessage, notification_id)
        assert kept is not None and kept.size == len(raw) > len(kept.compressed)

    # The cell lab's first notice comes back undeliverable
    bounce = returned("dsn-postfix-5.1.1.eml", addresses(service), notification_id, CELL_LAB)
    await deliver(
        settings.inbound_smtp_port,
        bounce,
        addresses(service).address(notification_id, Purpose.BOUNCE),
    )
    base = f"/console/incidents/{incident_id}/notifications/{notification_id}/sent"

    async with browser(service) as client:
        await sign_in(client, people.viewer)
        incident_page = (await client.get(f"/console/incidents/{incident_id}")).text
        assert f'href="{base}"' in incident_page
        assert "Open the email as sent" in incident_page

        async def bounced() -> bool:
            return "Bounce" in (await client.get(base)).text

        await until(bounced)
        page = await client.get(base)
        source = await client.get(f"{base.removesuffix('/sent')}/sent.eml")
        html = await client.get(f"{base}/html")

    assert page.status_code == 200
    text = page.text
    assert message_id.strip("<>") in text
    assert "Delivery attempts" in text and "250" in text
    assert "X-OOS-Notification" in text and "Auto-Submitted" in text
    assert "OOS-SENT" in text
    assert "Nothing came back" not in text
    # The download is the very bytes the mail server received, but for the confirmation
    # link's key: whoever follows it answers for the center
    assert source.status_code == 200
    assert source.headers["content-type"] == "message/rfc822"
    assert source.content == masked(raw) != raw
    assert len(source.content) == len(raw)
    [link] = set(ACK_LINK.findall(smtp_text(raw)))
    token = link.rsplit("/", 1)[1]
    for shown in (text, source.text, html.text):
        assert token not in shown.replace("=\r\n", "")
    assert "/ack/XXXXXXXX" in text and "/ack/XXXXXXXX" in html.text
    # The HTML part is framed under a policy that runs nothing in it
    assert "sandbox" in html.headers["content-security-policy"]
    assert "OOS-SENT" in html.text


def smtp_text(raw: bytes) -> str:
    """The message's text part, decoded."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def test_a_confirmation_link_is_masked_wherever_a_line_breaks_it() -> None:
    raw = (
        b"Subject: x\r\n\r\nhttps://n.example/ack/eyJu.abc-_9\r\n"
        b'<a href=3D"https://n.example/a=\r\nck/zAbC=\r\nd.E-f">Confirm</a>\r\n'
        b"https://n.example/account/settings\r\n"
    )
    assert masked(raw) == (
        b"Subject: x\r\n\r\nhttps://n.example/ack/XXXXXXXXXXX\r\n"
        b'<a href=3D"https://n.example/a=\r\nck/XXXX=\r\nXXXXX">Confirm</a>\r\n'
        b"https://n.example/account/settings\r\n"
    )


async def test_a_scheduled_email_has_nothing_sent_to_show(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await opened(service, smtp, "OOS-LATER")
    with Session(service.services.engine) as session:
        later = session.exec(
            select(Notification)
            .where(Notification.incident_id == incident_id, Notification.status == "scheduled")
            .order_by(Notification.due_at, Notification.id)  # type: ignore[arg-type]
        ).first()
    assert later is not None
    base = f"/console/incidents/{incident_id}/notifications/{later.id}"
    async with browser(service) as client:
        await sign_in(client, people.qa)
        page = await client.get(f"{base}/sent")
        source = await client.get(f"{base}/sent.eml")
    assert page.status_code == 200
    assert "No mail server has accepted this email yet" in page.text
    assert "No attempt yet." in page.text
    assert source.status_code == 404


async def test_the_sent_email_is_for_signed_in_people_and_only_under_its_incident(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    first = await opened(service, smtp, "OOS-ONE")
    other = await opened(service, smtp, "OOS-TWO")
    await received(smtp, 6)
    notification_id, _, _ = sent_to(smtp, CELL_LAB, "OOS-ONE")
    own = f"/console/incidents/{first}/notifications/{notification_id}"
    borrowed = f"/console/incidents/{other}/notifications/{notification_id}"
    unknown = f"/console/incidents/{first}/notifications/no-such-notification"

    async with browser(service) as client:
        for path in (f"{own}/sent", f"{own}/sent/html", f"{own}/sent.eml"):
            refused = await client.get(path)
            assert refused.status_code == 303
            assert refused.headers["location"].startswith("/console/sign-in?next=")
        await sign_in(client, people.viewer)
        assert (await client.get(f"{own}/sent")).status_code == 200
        for path in (borrowed, unknown):
            for suffix in ("/sent", "/sent/html", "/sent.eml"):
                missing = await client.get(f"{path}{suffix}")
                assert missing.status_code == 404, path + suffix
        hostile = await client.get(f"/console/incidents/{first}/notifications/%3Cscript%3E/sent")
        with_nul = await client.get(f"/console/incidents/{first}/notifications/n%00/sent.eml")
    assert hostile.status_code == 404 and with_nul.status_code == 404
    assert "<script>" not in hostile.text
