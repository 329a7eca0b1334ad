"""The embedded capture mail server: a real SMTP server on loopback that keeps what it receives.

``oos-notify serve`` starts it when no SMTP server is configured, so a newcomer sees every email,
links included, at ``/dev/mailbox``. The tests use it as their SMTP peer too.
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class CapturedMessage:
    number: int
    received_at: datetime
    mail_from: str
    recipients: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    """The message as it arrived, byte for byte."""

    @property
    def subject(self) -> str:
        # A subject folded before its first word arrives as "Subject:\r\n [OOS ...": valid
        # RFC 5322 that mail clients show without the space, but Python's parser keeps it.
        return str(self.message["Subject"] or "").strip()

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"] or "")

    def part(self, subtype: str) -> str:
        """The decoded ``text/<subtype>`` body."""
        body = self.message.get_body(preferencelist=(subtype,))
        if body is None:
            return ""
        content = body.get_content()
        return content if isinstance(content, str) else ""


class CaptureHandler:
    """Keeps the latest messages in memory, in arrival order."""

    def __init__(self, keep: int = 2000) -> None:
        self._messages: deque[CapturedMessage] = deque(maxlen=keep)
        self._count = 0
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._arrived:
            self._count += 1
            self._messages.append(
                CapturedMessage(
                    number=self._count,
                    received_at=datetime.now(UTC),
                    mail_from=str(envelope.mail_from),
                    recipients=tuple(envelope.rcpt_tos),
                    message=parsed,
                    raw=raw,
                )
            )
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    @property
    def count(self) -> int:
        """How many messages arrived since the server started (kept or not)."""
        with self._lock:
            return self._count

    def messages(self) -> list[CapturedMessage]:
        with self._lock:
            return list(self._messages)

    def get(self, number: int) -> CapturedMessage | None:
        with self._lock:
            return next((m for m in self._messages if m.number == number), None)

    def wait_for(self, count: int, timeout: float) -> list[CapturedMessage]:
        """Block until at least ``count`` messages arrived in all, or the timeout; return them."""
        with self._arrived:
            self._arrived.wait_for(lambda: self._count >= count, timeout=timeout)
            return list(self._messages)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class CaptureServer:
    """An aiosmtpd server on loopback in its own thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        handler: CaptureHandler | None = None,
    ) -> None:
        self.handler = handler or CaptureHandler()
        self.host = host
        self.port = port or free_port(host)
        # Imported here: every process imports this module, few run the server
        from aiosmtpd.controller import Controller

        self._controller = Controller(
            self.handler, hostname=host, port=self.port, data_size_limit=10 * 1024 * 1024
        )

    def start(self) -> CaptureServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
