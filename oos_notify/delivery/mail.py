"""MIME messages and SMTP delivery: connections reused across messages, every reply classified."""

from __future__ import annotations

import binascii
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.charset import Charset
from email.header import Header
from email.utils import format_datetime, formataddr
from pathlib import Path
from types import TracebackType

import aiosmtplib

from oos_notify.addresses import BREAKING
from oos_notify.clock import Clock
from oos_notify.delivery.rendering import RenderedMessage
from oos_notify.settings import Settings, SmtpSecurity


@dataclass(frozen=True)
class Envelope:
    """Who a message goes to and how it threads with the incident's other messages."""

    sender: str
    sender_name: str
    recipient: str
    recipient_name: str
    message_id: str
    notification_id: str
    thread_id: str | None
    """The Message-ID of the first message of the incident this recipient was sent, which the
    others point at so mail clients group them; None for that first message itself, which has
    nothing to point at."""
    incident_ref: str
    sent_at: datetime
    reply_to: str | None = None
    """Where replies go: the notification's own reply address, or the manufacturer's mailbox;
    None keeps them going to the From address."""
    return_path: str | None = None
    """The envelope sender bounces go to (VERP); None sends from the From address."""


SUPPRESS_ALL = "All"
"""Asks Exchange to send no out-of-office replies, automatic replies or non-delivery reports."""
SUPPRESS_RECEIPTS = "DR, RN, NRN"
"""Asks Exchange for no delivery or read receipts only: out-of-office replies, other automatic
replies and non-delivery reports come back to the return addresses, where the service reads
them."""


@dataclass(frozen=True)
class OutgoingMessage:
    """A message as it goes on the wire, with its SMTP envelope."""

    sender: str
    recipient: str
    data: bytes


CRLF = "\r\n"
_FOLD_AT = 78
"""Header lines longer than this are folded (RFC 5322's recommended limit)."""
_UTF8 = Charset("utf-8")


def _refuse_breaks(name: str, value: str) -> None:
    """Checked at the door (events, agreement files); refused here again, because a header
    that held one would end early and the rest of the value would start a header of its own."""
    if BREAKING.search(value):
        raise ValueError(f"a {name} header cannot contain a line break or control character")


def _header(name: str, value: str) -> str:
    """One header line: ASCII as it is, anything else as RFC 2047 words; long lines folded.
    Text that looks like an RFC 2047 word (``=?``) is encoded too, so it reads as written."""
    _refuse_breaks(name, value)
    plain = value.isascii() and "=?" not in value
    if plain and len(name) + 2 + len(value) <= _FOLD_AT:
        return f"{name}: {value}"
    charset = None if plain else "utf-8"
    return f"{name}: {Header(value, charset, header_name=name).encode(linesep=CRLF)}"


def _address(name: str, display_name: str, address: str) -> str:
    """An address header with exactly one mailbox. An ASCII name is quoted where it has to be
    (``Rivera, A.`` would otherwise read as two addresses); any other name is one RFC 2047
    word, as ``formataddr`` writes it: split into several, it would decode with spaces inside
    words in readers that keep the white space between them (Python's parser among them). The
    address goes out as it is, so it must be ASCII: an internationalised one would need
    SMTPUTF8, which the service does not ask the server for."""
    _refuse_breaks(name, display_name + address)
    if not address.isascii():
        raise ValueError(f"a {name} address must be ASCII, not {address!r}")
    if any(c in address for c in ' ,;<>"()[]\\'):
        raise ValueError(f"a {name} header takes one plain mailbox, not {address!r}")
    if display_name.isascii() and "=?" not in display_name:
        return f"{name}: {formataddr((display_name, address))}"
    return f"{name}: {_UTF8.header_encode(display_name)} <{address}>"


_QP_LINE = 76
"""RFC 2045's limit on an encoded line."""


def quoted_printable(text: str) -> str:
    """Quoted-printable: mostly ASCII text stays readable on the wire, which filters expect
    of text (base64 for plain text is a spam sign), and lines stay within 76 characters.

    Lines end at CR, LF or CRLF only, and each ends with CRLF: any other character is its UTF-8
    bytes, whatever they are (the email package's encoder split the bytes wherever one looked
    like a line break in Latin-1, and cut a Polish a-ogonek, U+0105, in two). Encoded in C by
    ``binascii``, which writes a 77th character where a line's trailing white space falls at
    the wrap: that line is wrapped once more before its last ``=XX``."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True).decode("ascii")
    if " \n" in text or "\t\n" in text:
        encoded = "\n".join(
            f"{line[:-3]}=\n{line[-3:]}" if len(line) > _QP_LINE else line
            for line in encoded.split("\n")
        )
    return encoded.replace("\n", CRLF)


def _part(subtype: str, body: str) -> str:
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
        f"Content-Transfer-Encoding: quoted-printable{CRLF}{CRLF}{quoted_printable(body)}"
    )


def build_message(
    rendered: RenderedMessage, envelope: Envelope, signer: DkimSigner | None = None
) -> OutgoingMessage:
    """A ``multipart/alternative`` message (text, then HTML) that threads per incident; raises
    ValueError for a header that cannot be written (a line break, an address that is not ASCII).

    Written out directly: the email package's generator (and before it ``EmailMessage``'s
    header parsing) cost more per message than rendering its templates.
    """
    # Quoted-printable writes '=' only before two hex digits or a line end, so no encoded line
    # can hold '=_' and match the boundary.
    boundary = f"=_{secrets.token_hex(16)}"
    headers = [
        _address("From", envelope.sender_name, envelope.sender),
        _address("To", envelope.recipient_name, envelope.recipient),
        _header("Subject", rendered.subject),
        f"Date: {format_datetime(envelope.sent_at)}",
        _header("Message-ID", envelope.message_id),
        # Every later message of an incident points at the first one its recipient was sent,
        # so mail clients group them.
        *(
            [_header("In-Reply-To", envelope.thread_id), _header("References", envelope.thread_id)]
            if envelope.thread_id
            else []
        ),
        *([_address("Reply-To", "", envelope.reply_to)] if envelope.reply_to else []),
        # RFC 3834: still says that no responder should answer; those that follow it stay
        # silent, return addresses or not (see docs/returned-mail.md).
        "Auto-Submitted: auto-generated",
        "X-Auto-Response-Suppress: "
        + (SUPPRESS_RECEIPTS if envelope.return_path else SUPPRESS_ALL),
        _header("X-OOS-Incident", envelope.incident_ref),
        # Names the outbox row, so a receiver (or a test) can tell resends of one notification
        # apart from different notifications whatever their Message-ID says.
        _header("X-OOS-Notification", envelope.notification_id),
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
    ]
    data = (
        CRLF.join(headers)
        + CRLF
        + CRLF
        + "".join(
            f"--{boundary}{CRLF}{_part(subtype, body)}"
            for subtype, body in (("plain", rendered.text), ("html", rendered.html))
        )
        + f"--{boundary}--{CRLF}"
    )
    sender = envelope.return_path or envelope.sender
    message = data.encode("ascii")
    if signer is not None:
        message = signer.sign(message)
    return OutgoingMessage(sender, envelope.recipient, message)


class DkimKeyError(ValueError):
    """The DKIM key file cannot be read or is not a private key this service can sign with."""


SIGNED_HEADERS = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"In-Reply-To",
    b"References",
    b"Reply-To",
    b"Auto-Submitted",
    b"MIME-Version",
    b"Content-Type",
)


@dataclass(frozen=True)
class DkimSigner:
    """Signs each message with the operator's key (RFC 6376, rsa-sha256, relaxed/relaxed), so
    that it passes DMARC after a forwarder breaks SPF."""

    selector: str
    domain: str
    key: bytes

    @classmethod
    def load(cls, key_file: Path, selector: str, domain: str) -> DkimSigner:
        """Raise DkimKeyError saying what is wrong with the file."""
        try:
            key = key_file.read_bytes()
        except OSError as exc:
            raise DkimKeyError(f"cannot read {key_file}: {exc.strerror}") from None
        # dkimpy (and the DNS library it loads) only where a key is set: it took a tenth of
        # every start-up without one
        from dkim.crypto import UnparsableKeyError, parse_pem_private_key

        try:
            parse_pem_private_key(key)
        except (UnparsableKeyError, ValueError, IndexError):
            raise DkimKeyError(
                f"{key_file} is not an RSA private key in PEM form "
                "(openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048)"
            ) from None
        return cls(selector, domain.lower(), key)

    def sign(self, message: bytes) -> bytes:
        import dkim

        signature = dkim.sign(
            message,
            self.selector.encode(),
            self.domain.encode(),
            self.key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
            linesep=b"\r\n",
        )
        return bytes(signature) + message


@dataclass(frozen=True)
class SendOutcome:
    accepted: bool
    permanent: bool
    code: int | None
    """The server's reply code; ``None`` when no server answered (refused, timed out, dropped)."""
    reply: str
    duration_ms: int
    connected: bool = True
    """False when no connection to the mail server could be made: nobody judged the message."""


POOL_IDLE = timedelta(seconds=30)
"""How long a session is kept open unused between batches: well inside the five minutes a mail
server waits for the next command (RFC 5321, 4.5.3.2.7), so it is the client that quits."""


class SmtpPool:
    """SMTP sessions kept open between batches, so that a batch does not pay for a new connection,
    greeting, STARTTLS and login on each of its connections. At most ``size`` wait unused, each
    for ``idle`` at most (``close_idle``). A session is checked before it is used again (one
    NOOP): one the server closed or broke meanwhile is dropped, and a new one is opened instead.
    """

    def __init__(
        self,
        settings: Settings,
        host: str,
        port: int,
        clock: Clock,
        size: int,
        idle: timedelta = POOL_IDLE,
    ) -> None:
        self._settings = settings
        self._host = host
        self._port = port
        self._clock = clock
        self._size = size
        self._idle = idle
        self._unused: list[tuple[datetime, aiosmtplib.SMTP]] = []
        self.opened = 0
        """How many sessions it has opened: for metrics and tests."""

    async def session(self) -> aiosmtplib.SMTP:
        """A session that answers: one kept open, if one still does, else a new one. Raises as
        opening a session raises (refused, silent, a 554 greeting, failed STARTTLS or login)."""
        await self.close_idle()
        while self._unused:
            _, client = self._unused.pop()
            if not client.is_connected:
                client.close()
                continue
            try:
                await client.noop()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()
                continue
            return client
        client = await _open_session(
            self._settings, self._host, self._port, self._settings.smtp_timeout_seconds
        )
        self.opened += 1
        return client

    async def give_back(self, client: aiosmtplib.SMTP) -> None:
        """Keep a session that is still open for the next batch, or quit it if enough wait."""
        if client.is_connected and len(self._unused) < self._size:
            self._unused.append((self._clock.now(), client))
        else:
            await _quit(client)

    async def close_idle(self) -> int:
        """Quit the sessions unused for longer than ``idle``; return how many."""
        since = self._clock.now() - self._idle
        stale = [client for used, client in self._unused if used < since]
        self._unused = [(used, client) for used, client in self._unused if used >= since]
        for client in stale:
            await _quit(client)
        return len(stale)

    async def close(self) -> None:
        """Quit every session kept open."""
        unused, self._unused = self._unused, []
        for _, client in unused:
            await _quit(client)


async def _quit(client: aiosmtplib.SMTP) -> None:
    if not client.is_connected:
        client.close()
        return
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        client.close()


class SmtpBatch:
    """One SMTP connection for a batch of messages; reconnects if the server drops it.

    With a pool, the connection is taken from it and given back after the batch; without one,
    it is opened for the batch and quit after it.

    When the server cannot be reached at all, the rest of the batch fails at once with the same
    reason instead of waiting out a connection timeout per message.
    """

    def __init__(
        self, settings: Settings, host: str, port: int, pool: SmtpPool | None = None
    ) -> None:
        self._settings = settings
        self._host = host
        self._port = port
        self._pool = pool
        self._client: aiosmtplib.SMTP | None = None
        self._unreachable: str | None = None

    async def __aenter__(self) -> SmtpBatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if self._pool is not None and exc is None:
            await self._pool.give_back(client)
        else:
            await _quit(client)

    async def _connect(self) -> aiosmtplib.SMTP:
        if self._pool is not None:
            return await self._pool.session()
        return await _open_session(
            self._settings, self._host, self._port, self._settings.smtp_timeout_seconds
        )

    async def send(self, message: OutgoingMessage) -> SendOutcome:
        """Send one message and say how it went; never raises for an SMTP or network failure."""
        started = time.perf_counter()

        def outcome(
            accepted: bool, permanent: bool, code: int | None, reply: str, connected: bool = True
        ) -> SendOutcome:
            elapsed = int((time.perf_counter() - started) * 1000)
            return SendOutcome(accepted, permanent, code, reply, elapsed, connected)

        if self._unreachable is not None:
            return outcome(False, False, None, self._unreachable, connected=False)
        if self._client is None or not self._client.is_connected:
            try:
                self._client = await self._connect()
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                # Refused, silent, a 554 greeting, failed STARTTLS or login: the server will
                # not take mail from us at all, which says nothing about this message.
                self._drop()
                self._unreachable = f"{type(exc).__name__}: {exc}"
                return outcome(False, False, None, self._unreachable, connected=False)
        try:
            _, reply = await self._client.sendmail(
                message.sender, [message.recipient], message.data
            )
            return outcome(True, False, 250, reply)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0]
            return outcome(False, refusal.code >= 500, refusal.code, refusal.message)
        except aiosmtplib.SMTPResponseException as exc:
            self._drop()
            return outcome(False, exc.code >= 500, exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self._drop()
            return outcome(False, False, None, f"{type(exc).__name__}: {exc}")

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None


PROBE_TIMEOUT_SECONDS = 3.0


async def _open_session(
    settings: Settings, host: str, port: int, timeout: float
) -> aiosmtplib.SMTP:
    """A connected client, past the greeting, STARTTLS and login as configured."""
    client = aiosmtplib.SMTP(
        hostname=host,
        port=port,
        timeout=timeout,
        local_hostname=settings.ehlo_name,
        use_tls=settings.effective_smtp_security is SmtpSecurity.TLS,
        start_tls=settings.effective_smtp_security is SmtpSecurity.STARTTLS,
    )
    await client.connect()
    if settings.smtp_username:
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
        try:
            await client.login(settings.smtp_username, password)
        except aiosmtplib.SMTPException:
            client.close()
            raise
    return client


async def probe(settings: Settings, host: str, port: int) -> str | None:
    """Whether the mail server would take mail from us now: ``None`` if so, else why not.

    Opens a session as a send would (greeting, STARTTLS, login) and quits; gives up quickly.
    """
    try:
        client = await _open_session(
            settings, host, port, min(settings.smtp_timeout_seconds, PROBE_TIMEOUT_SECONDS)
        )
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
