"""Service settings from ``OOS_NOTIFY_*`` environment variables and an optional ``.env`` file."""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from oos_notify.addresses import sender


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
    smtp_security: SmtpSecurity = SmtpSecurity.NONE
    smtp_timeout_seconds: float = Field(default=15.0, gt=0)

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
    reply_confirm_words: Annotated[tuple[str, ...], NoDecode] = DEFAULT_CONFIRM_WORDS
    """What the first line of a reply may start with to acknowledge, compared without case."""

    host: str = "127.0.0.1"
    port: int = 8000
    dev_mailbox_on_network: bool = False
    """Serve /dev/mailbox (every captured email, links included) on a non-loopback bind: for a
    demo in a container whose port is published on the host's loopback only."""
    log_format: LogFormat = LogFormat.JSON

    sweep_interval_seconds: float = Field(default=5.0, gt=0)
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
            self.smtp_security
        ]

    @property
    def mail_domain(self) -> str:
        """The domain of Message-IDs: the From address's, so replies thread per sender."""
        return self.mail_from.rpartition("@")[2] or "localhost"
