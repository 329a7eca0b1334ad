"""Returned mail for the tests: the hand-written samples made to come back for a real
notification, and replies written the way mail clients write them."""

from __future__ import annotations

import json
import re
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import aiosmtplib

from oos_notify.return_addresses import Purpose, ReturnAddresses

SAMPLES = Path(__file__).resolve().parent / "samples"
EXPECTED = json.loads((SAMPLES / "expected.json").read_text(encoding="utf-8"))
PLACEHOLDER_NOTIFICATION = "ntf_01KB2X8M3Q7R9T5V6W4Y2Z0A1C"
PLACEHOLDER_RECIPIENT = "dana.whitfield@mercy-general.example"
_FIRST_MESSAGE_ID = re.compile(r"^Message-I[dD]:[^\n]*(\n[ \t][^\n]*)*", re.MULTILINE)


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def returned(
    name: str, addresses: ReturnAddresses, notification_id: str, recipient: str | None = None
) -> bytes:
    """Sample ``name`` as it would come back for ``notification_id`` (sent to ``recipient``),
    with a Message-ID of its own."""
    text = (SAMPLES / name).read_text(encoding="utf-8")
    text = text.replace(
        EXPECTED["bounce_address"], addresses.address(notification_id, Purpose.BOUNCE)
    )
    text = text.replace(
        EXPECTED["reply_address"], addresses.address(notification_id, Purpose.REPLY)
    )
    text = text.replace(PLACEHOLDER_NOTIFICATION, notification_id)
    text = text.replace(PLACEHOLDER_NOTIFICATION.lower(), notification_id.lower())
    if recipient is not None:
        text = text.replace(PLACEHOLDER_RECIPIENT, recipient)
    text = _FIRST_MESSAGE_ID.sub(f"Message-ID: {make_msgid(domain='sample.example')}", text, 1)
    return text.encode("utf-8")


def passed(domain: str, server: str = "mx.manufacturer.example") -> str:
    """The Authentication-Results the manufacturer's receiving server adds to mail that
    passes SPF, DKIM and DMARC for ``domain``."""
    return (
        f"{server}; spf=pass smtp.mailfrom={domain}; dkim=pass header.d={domain} "
        f"header.s=s1; dmarc=pass (p=reject) header.from={domain}"
    )


def reply(
    sender: str,
    to: str,
    text: str,
    *,
    quoting: str | None = None,
    authentication: str | None = "passed",
) -> bytes:
    """A person's reply, above the quoted original when ``quoting`` gives its text. It arrives
    as the manufacturer's receiving server passed it (``authentication`` "passed"), with the
    results given, or with none (None)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Re: [OOS] Release failure: CARTX lot LOT-24-1187"
    message["Date"] = "Tue, 24 Nov 2026 09:40:00 -0600"
    message["Message-ID"] = make_msgid(domain="mercy.example")
    if authentication == "passed":
        authentication = passed(sender.rpartition("@")[2].strip(">").lower())
    if authentication is not None:
        message["Authentication-Results"] = authentication
    body = text
    if quoting is not None:
        quoted = "\n".join(f"> {line}" for line in quoting.splitlines())
        body += (
            "\n\nOn Tue, 24 Nov 2026 at 09:12, Acme Bio OOS notifications <\n"
            f"oos-notify@localhost> wrote:\n\n{quoted}\n"
        )
    message.set_content(body)
    return message.as_bytes()


async def deliver(port: int, raw: bytes, recipient: str, sender: str = "") -> None:
    """Hand a message to the listener over SMTP, as the organisation's relay would."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as client:
        await client.sendmail(sender, [recipient], raw)
