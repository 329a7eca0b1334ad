"""Service settings from ``OOS_NOTIFY_*`` environment variables and an optional ``.env`` file."""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from oos_notify.addresses import LOCALHOST, sender


class SmtpSecurity(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class LogFormat(StrEnum):
    JSON = "json"
    """One JSON object per line (for log collectors)."""
    TEXT = "text"
    """Classic lines with ``key=value`` ids (for a terminal)."""


class InboundMode(StrEnum):
    NONE = "none"
    IMAP = "imap"
    """Poll a mailbox that receives the reply domain's mail (IDLE where the server offers it)."""
    SMTP = "smtp"
    """Listen for the reply domain's mail over SMTP, from the organisation's own mail relay."""


class ImapSecurity(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


DEFAULT_CONFIRM_WORDS = (
    "received",
    "confirmed",
    "confirm",
    "ack",
    "acknowledged",
    "ok",
    "okay",
    "noted",
    "erhalten",
    "bestätigt",
    "reçu",
    "bien reçu",
    "confirmé",
    "recibido",
    "confirmado",
)


class Settings(BaseSettings):
    """Everything an operator can set; the defaults run the whole flow on one machine."""

    model_config = SettingsConfigDict(
        env_prefix="OOS_NOTIFY_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = "sqlite:///./oos_notify.db"
    migrate_on_start: bool | None = None
    """Whether a process may change the schema when it starts; unset: it creates the tables of
    an empty database and upgrades a SQLite file, but leaves a PostgreSQL database's upgrade to
    ``oos-notify db upgrade``."""
    config_dir: Path = Path("./config")
    templates_dir: Path = Path("./templates")

    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: SmtpSecurity | None = None
    """Unset: what the port implies (465: TLS; any other port: STARTTLS, required). ``none``
    only when set, and never with a username."""
    smtp_timeout_seconds: float = Field(default=15.0, gt=0)
    smtp_ehlo_name: str | None = Field(
        default=None, max_length=253, pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"
    )
    """The name the service gives in EHLO; unset: the From address's domain (see
    ``ehlo_name``)."""
    dkim_key_file: Path | None = None
    """An RSA private key in PEM form: outgoing mail is signed with it."""
    dkim_selector: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")
    dkim_domain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
    """The ``d=`` of the signature; unset: the From address's domain."""
    dev_allow_insecure_mail: bool = False
    """Development only: send over SMTP from a ``localhost`` address, with http or loopback
    links. Without it, a configured SMTP server needs real, qualified ``MAIL_FROM`` and
    ``PUBLIC_BASE_URL`` (https) settings, or the service does not start."""

    mail_from: Annotated[str, AfterValidator(sender)] = "oos-notify@localhost"
    """One mailbox, stored in its ASCII form (see ``addresses.mailbox``)."""
    public_base_url: str = "http://127.0.0.1:8000"
    secret_key: SecretStr | None = None

    instance_name: str | None = None
    """What this process's claims on notifications are named after (the host name when unset):
    a restart under the same name takes its predecessor's claims back at once. Each process
    that sends needs a name of its own."""

    reply_domain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
    """The domain of each notification's own reply and bounce addresses; unset, messages carry
    neither and no mail is read back."""
    reply_address_separator: str = Field(default="+", pattern=r"^[+=_-]$")
    inbound: InboundMode = InboundMode.NONE
    inbound_imap_host: str | None = None
    inbound_imap_port: int | None = None
    inbound_imap_username: str | None = None
    inbound_imap_password: SecretStr | None = None
    inbound_imap_security: ImapSecurity = ImapSecurity.TLS
    inbound_imap_folder: str = "INBOX"
    inbound_imap_processed_folder: str = "Processed"
    inbound_poll_seconds: float = Field(default=60.0, gt=0)
    """How often the mailbox is read when the server has no IDLE, and how long an IDLE waits
    before it is renewed (at most 5 minutes)."""
    inbound_smtp_host: str = "127.0.0.1"
    inbound_smtp_port: int = Field(default=2525, ge=1, le=65535)
    inbound_max_message_bytes: int = Field(default=10 * 1024 * 1024, ge=64 * 1024)
    inbound_max_parse_seconds: float = Field(default=10.0, gt=0)
    """How long reading one returned mail may take; a message that takes longer fails alone."""
    inbound_authserv_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$")
    """The authserv-id (RFC 8601) the operator's own receiving server writes in
    ``Authentication-Results``; only its results are trusted. Unset: no reply confirms."""
    reply_confirm_words: Annotated[tuple[str, ...], NoDecode] = DEFAULT_CONFIRM_WORDS
    """What the first line of a reply may start with to acknowledge, compared without case."""

    host: str = "127.0.0.1"
    port: int = 8000
    dev_mailbox_on_network: bool = False
    """Serve /dev/mailbox (every captured email, links included) on a non-loopback bind: for a
    demo in a container whose port is published on the host's loopback only."""
    log_format: LogFormat = LogFormat.JSON

    sweep_interval_seconds: float = Field(default=5.0, gt=0)
    claim_lease_seconds: float = Field(default=30.0, ge=1)
    """How long a worker's claims last without renewal before another worker may take them over
    (it renews them every third of this while it sends)."""
    send_batch_size: int = Field(default=50, ge=1)
    smtp_connections: int = Field(default=4, ge=1)
    max_send_attempts: int = Field(default=8, ge=1)
    retry_base_seconds: float = Field(default=30.0, gt=0)
    max_request_bytes: int = Field(default=64 * 1024, ge=1024)
    events_per_minute: float = Field(default=600.0, gt=0)
    events_burst: int = Field(default=1000, ge=1)
    auth_failures_per_minute: int = Field(default=30, ge=1)
    ack_requests_per_minute: int = Field(default=60, ge=1)

    console_idle_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)
    """A console session ends after this long without a page asked for (live refreshes of an
    open page do not count)."""
    console_session_hours: int = Field(default=12, ge=1, le=30 * 24)
    """A console session ends this long after sign-in, however active."""

    @field_validator("reply_confirm_words", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """``received, confirmed, ok`` in the environment; a list in code."""
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            words = tuple(" ".join(str(w).split()).casefold() for w in value)
            return tuple(w for w in words if w)
        return value

    @property
    def effective_imap_port(self) -> int:
        if self.inbound_imap_port is not None:
            return self.inbound_imap_port
        return 993 if self.inbound_imap_security is ImapSecurity.TLS else 143

    @property
    def uses_capture_server(self) -> bool:
        """No SMTP server configured: mail goes to the embedded capture server."""
        return self.smtp_host is None

    @property
    def listens_on_loopback(self) -> bool:
        """Only this machine can reach the service: 127.0.0.0/8, ::1 or localhost."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def exposes_mailbox(self) -> bool:
        """The capture mailbox would be served to whoever reaches the port, unasked."""
        return (
            self.uses_capture_server
            and not self.listens_on_loopback
            and not self.dev_mailbox_on_network
        )

    @property
    def uses_https(self) -> bool:
        """Links and the console are reached over HTTPS: cookies get the Secure flag."""
        return self.public_base_url.lower().startswith("https://")

    @property
    def effective_smtp_port(self) -> int:
        if self.smtp_port is not None:
            return self.smtp_port
        return {SmtpSecurity.NONE: 25, SmtpSecurity.STARTTLS: 587, SmtpSecurity.TLS: 465}[
            self.effective_smtp_security
        ]

    @property
    def effective_smtp_security(self) -> SmtpSecurity:
        """TLS on connect for port 465, STARTTLS (required) on any other: ``none`` only when an
        operator says so. The embedded capture server, on loopback, speaks plain SMTP."""
        if self.uses_capture_server:
            return SmtpSecurity.NONE
        if self.smtp_security is not None:
            return self.smtp_security
        return SmtpSecurity.TLS if self.smtp_port == 465 else SmtpSecurity.STARTTLS

    @property
    def replies_confirm(self) -> bool:
        """A reply "received" acknowledges: replies come back to the reply domain, are read,
        and the operator's own receiving server's results say who sent them."""
        return (
            self.reply_domain is not None
            and self.inbound is not InboundMode.NONE
            and self.inbound_authserv_id is not None
        )

    @property
    def from_address(self) -> str:
        """The From address: ``MAIL_FROM``'s mailbox on the reply domain when there is one, so
        that a notification's Reply-To is on its From domain (a Reply-To on another domain than
        the From, to a recipient of the From's own domain, is what spam filters call a spoof:
        rspamd's SPOOF_REPLYTO scores 6)."""
        if self.reply_domain is None:
            return self.mail_from
        return f"{self.mail_from.rpartition('@')[0]}@{self.reply_domain.lower()}"

    @property
    def mail_domain(self) -> str:
        """The domain of Message-IDs: the From address's, so replies thread per sender."""
        return self.from_address.rpartition("@")[2] or LOCALHOST

    @property
    def ehlo_name(self) -> str:
        """What the service calls itself in EHLO: the setting, else the first qualified name of
        the From domain and the public base URL's host; never ``localhost``, which relays that
        want a fully qualified name refuse."""
        if self.smtp_ehlo_name:
            return self.smtp_ehlo_name
        for name in (self.mail_domain, urlsplit(self.public_base_url).hostname or ""):
            if is_qualified_domain(name):
                return name
        return "oos-notify.invalid"

    def mail_problems(self) -> list[tuple[str, str]]:
        """What stops this service from sending mail that a receiving server can trust, as
        (setting, why) pairs; empty when all is well, or when mail goes to the capture server."""
        if self.uses_capture_server:
            return []
        problems: list[tuple[str, str]] = []
        if self.smtp_username and self.effective_smtp_security is SmtpSecurity.NONE:
            problems.append(
                (
                    "OOS_NOTIFY_SMTP_SECURITY",
                    "is none, and OOS_NOTIFY_SMTP_USERNAME is set: the password would cross "
                    "the network in clear; use starttls or tls",
                )
            )
        if self.dev_allow_insecure_mail:
            return problems
        domain = self.mail_from.rpartition("@")[2]
        if not is_qualified_domain(domain):
            problems.append(
                (
                    "OOS_NOTIFY_MAIL_FROM",
                    f"the domain {domain!r} is not a fully qualified domain of yours: mail from "
                    "it cannot pass SPF, DKIM or DMARC; set the address mail comes from, e.g. "
                    "oos-notify@manufacturer.example (or, in development only, "
                    "OOS_NOTIFY_DEV_ALLOW_INSECURE_MAIL=true)",
                )
            )
        if self.reply_domain is not None and not is_qualified_domain(self.reply_domain):
            problems.append(
                (
                    "OOS_NOTIFY_REPLY_DOMAIN",
                    f"{self.reply_domain!r} is not a fully qualified domain of yours: mail "
                    "goes From it, and would pass no SPF, DKIM or DMARC check (or, in "
                    "development only, OOS_NOTIFY_DEV_ALLOW_INSECURE_MAIL=true)",
                )
            )
        url = urlsplit(self.public_base_url)
        if url.scheme != "https" or not is_qualified_domain(url.hostname or ""):
            problems.append(
                (
                    "OOS_NOTIFY_PUBLIC_BASE_URL",
                    f"{self.public_base_url!r} is not an https address on a fully qualified "
                    "domain: the links in every email would not reach the service, or be "
                    "read as spam; set the address centers open, e.g. "
                    "https://oos-notify.manufacturer.example (or, in development only, "
                    "OOS_NOTIFY_DEV_ALLOW_INSECURE_MAIL=true)",
                )
            )
        return problems


def is_qualified_domain(name: str) -> bool:
    """A domain name with a dot that is not an IP address nor under ``localhost`` (or the other
    names RFC 6761 keeps off the internet)."""
    name = name.lower().rstrip(".")
    labels = name.split(".")
    if len(labels) < 2 or not all(labels):
        return False
    if labels[-1] in (LOCALHOST, "local", "localdomain", "invalid", "test", "internal"):
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return not labels[-1].isdigit()
    return False
