"""One notification as it was sent: the message the mail server accepted, read back from what
was kept at the time (``store.sent_messages``), each attempt to deliver it, and what came back
about it (a bounce, an automatic reply, a reply), as ``inbound`` recorded them."""

from __future__ import annotations

import email
import email.policy
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


@dataclass(frozen=True)
class Kept:
    """The message as it went on the wire, and its parts decoded for reading."""

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
    """A kept message's headers, in order and decoded, and its text and HTML parts."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    headers = [(name, " ".join(str(value).split())) for name, value in message.items()]
    return Kept(raw, headers, _part(message, "plain"), _part(message, "html"))


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
