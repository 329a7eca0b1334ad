"""One notification as it was sent: the message the mail server accepted, read back from what
was kept at the time (``store.sent_messages``), each attempt to deliver it, and what came back
about it (a bounce, an automatic reply, a reply), as ``inbound`` recorded them.

The copy is shown byte for byte but for one thing: the key of each confirmation link is masked,
character for character. Whoever follows the link answers for the center, and QA must not (the
preview shows a placeholder for the same reason)."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage

from sqlmodel import Session, col, select

from oos_notify.store import sent_messages
from oos_notify.store.models import DeliveryAttempt, InboundMessage, Notification

RETURNED_KINDS = {
    "bounce": "Bounce",
    "delay": "Delay warning",
    "auto_reply": "Automatic reply",
    "reply": "Reply",
    "report": "Report",
    "unreadable": "Unreadable mail",
}
"""What came back, in the QA desk's words."""

_SOFT_BREAK = rb"(?:=\r\n)?"
"""Quoted-printable may break a line anywhere in a link, with ``=`` at the end of the line."""
_ACK_LINK = re.compile(
    _SOFT_BREAK.join(re.escape(bytes([c])) for c in b"/ack/") + rb"((?:[A-Za-z0-9_.\-]|=\r\n)+)"
)
_TOKEN_CHARACTER = re.compile(rb"[A-Za-z0-9_.\-]")
MASK = b"X"


def masked(raw: bytes) -> bytes:
    """The message with each confirmation link's key masked (``/ack/XXXX…``), its length and
    every other byte unchanged."""

    def hide(link: re.Match[bytes]) -> bytes:
        prefix = link.group(0)[: link.start(1) - link.start(0)]
        return prefix + _TOKEN_CHARACTER.sub(MASK, link.group(1))

    return _ACK_LINK.sub(hide, raw)


@dataclass(frozen=True)
class Kept:
    """The message as it went on the wire (its confirmation links masked), and its parts
    decoded for reading."""

    raw: bytes
    headers: list[tuple[str, str]]
    text: str
    html: str

    @property
    def source(self) -> str:
        """The wire bytes as text (they are ASCII: every header and part is encoded)."""
        return self.raw.decode("ascii", errors="replace")


@dataclass(frozen=True)
class SentView:
    notification: Notification
    kept: Kept | None
    attempts: Sequence[DeliveryAttempt]
    returned: Sequence[InboundMessage]

    def returned_kind(self, mail: InboundMessage) -> str:
        return RETURNED_KINDS.get(mail.kind, mail.kind)


def read(raw: bytes) -> Kept:
    """A kept message with its confirmation links masked: its headers, in order and decoded,
    and its text and HTML parts."""
    shown = masked(raw)
    message = email.message_from_bytes(shown, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    headers = [(name, " ".join(str(value).split())) for name, value in message.items()]
    return Kept(shown, headers, _part(message, "plain"), _part(message, "html"))


def _part(message: EmailMessage, subtype: str) -> str:
    body = message.get_body(preferencelist=(subtype,))
    content = body.get_content() if body is not None else ""
    return content if isinstance(content, str) else ""


def load(session: Session, notification: Notification) -> SentView:
    """Everything the page shows, in the order it happened."""
    raw = sent_messages.read(session, notification.id)
    attempts = session.exec(
        select(DeliveryAttempt)
        .where(DeliveryAttempt.notification_id == notification.id)
        .order_by(col(DeliveryAttempt.at), col(DeliveryAttempt.id))
    ).all()
    returned = session.exec(
        select(InboundMessage)
        .where(InboundMessage.notification_id == notification.id)
        .order_by(col(InboundMessage.received_at), col(InboundMessage.id))
    ).all()
    return SentView(notification, read(raw) if raw is not None else None, attempts, returned)
