"""Nothing forwarded to QA carries a center's working confirmation link or return address,
however the center's reply quotes its notice."""

from __future__ import annotations

from datetime import timedelta

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.inbound.center_links import without_center_links
from oos_notify.incidents.acknowledgement import AckTokens
from oos_notify.return_addresses import Purpose
from oos_notify.settings import Settings
from tests.conftest import ACK_LINK, START, RunningService, ack_link
from tests.inbound.conftest import COORDINATOR, QA, addresses, detail, open_incident, sent_since
from tests.inbound.mail import deliver, reply


async def test_a_reply_forwarding_its_notice_reaches_qa_without_its_link_or_address(
    service: RunningService, smtp: CaptureServer, settings: Settings, clock: ManualClock
) -> None:
    # Given a notice, and the coordinator's question with the notice forwarded under it
    opened = await open_incident(service, smtp)
    link = ack_link(opened.notice)
    to = addresses(service).address(opened.notification_id, Purpose.REPLY)
    bounce = addresses(service).address(opened.notification_id, Purpose.BOUNCE)
    token = link.rsplit("/", 1)[1]
    text = (
        "Who should we call about this one?\n\n"
        "Begin forwarded message:\n\n"
        f"Reply-To: {to}\nReturn-Path: <{bounce}>\n\n"
        f"{opened.notice.part('plain')}\n(the token alone: {token})\n"
    )
    before = smtp.handler.count

    # When it arrives
    await deliver(settings.inbound_smtp_port, reply(COORDINATOR, to, text), to, sender=COORDINATOR)
    await service.settle()

    # Then QA gets the question, without the link, its token or the return addresses
    [forward] = sent_since(smtp, before)
    assert forward.recipients == (QA,)
    for part in ("plain", "html"):
        body = forward.part(part)
        assert "Who should we call about this one?" in body
        assert ACK_LINK.findall(body) == [] and "/ack/" not in body
        assert token not in body and to not in body and bounce not in body
        assert "[confirmation link removed]" in body and "[reply address removed]" in body
    # And the link in the notice still works for the coordinator, not for QA's copy
    clock.advance(timedelta(minutes=1))
    answer = await service.client.post(link, data={"response": "received"})
    assert answer.status_code == 200
    assert (await detail(service, opened.incident_id))["status"] == "acknowledged"


def test_only_working_tokens_and_any_confirmation_link_are_removed() -> None:
    tokens = AckTokens("secret")
    text = (
        "see https://oos.example/ack/abc.def, or oos.example/ACK/x\n"
        "a long word that is no token: " + "x" * 60 + "\n"
        "oos+a01kb2x8m3q7r9t5v6w4y2z0a1c0000000000000000@reply.example wrote"
    )
    cleaned = without_center_links(text, tokens, START)
    assert cleaned == (
        "see [confirmation link removed], or [confirmation link removed]\n"
        "a long word that is no token: " + "x" * 60 + "\n"
        "[reply address removed] wrote"
    )
