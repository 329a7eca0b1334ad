"""With a real SMTP server configured, the service sends only mail a receiving server can trust:
it refuses to start from ``localhost``, with http links, or with a password in clear; it asks
for TLS by default, names itself in EHLO, and signs with DKIM when given a key."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureHandler, CaptureServer, free_port
from oos_notify.settings import Settings, SmtpSecurity
from tests.conftest import (
    CONFIG_DIR,
    START,
    TEMPLATES_DIR,
    command_env,
    received,
    release_failure,
    service_settings,
    start_service,
)

COMMAND = str(Path(sys.executable).parent / "oos-notify")
PRODUCTION = {
    "OOS_NOTIFY_SMTP_HOST": "relay.manufacturer.example",
    "OOS_NOTIFY_SECRET_KEY": "sending-setup-secret",
    "OOS_NOTIFY_MAIL_FROM": "oos-notify@manufacturer.example",
    "OOS_NOTIFY_PUBLIC_BASE_URL": "https://oos-notify.manufacturer.example",
}


def serve(
    tmp_path: Path, unset: str | None = None, **settings: str
) -> subprocess.CompletedProcess[str]:
    """``oos-notify serve`` with ``settings`` over a production setup, less ``unset``; each
    test here expects it to stop at once."""
    env = command_env(tmp_path) | {
        "OOS_NOTIFY_CONFIG_DIR": str(CONFIG_DIR),
        "OOS_NOTIFY_TEMPLATES_DIR": str(TEMPLATES_DIR),
    }
    env |= {k: v for k, v in PRODUCTION.items() if k != unset} | settings
    return subprocess.run(
        [COMMAND, "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("OOS_NOTIFY_MAIL_FROM", None),
        ("OOS_NOTIFY_MAIL_FROM", "oos-notify@localhost"),
        ("OOS_NOTIFY_MAIL_FROM", "oos-notify@build.internal"),
        ("OOS_NOTIFY_PUBLIC_BASE_URL", None),
        ("OOS_NOTIFY_PUBLIC_BASE_URL", "http://oos-notify.manufacturer.example"),
        ("OOS_NOTIFY_PUBLIC_BASE_URL", "https://127.0.0.1:8000"),
        ("OOS_NOTIFY_PUBLIC_BASE_URL", "https://localhost"),
        ("OOS_NOTIFY_REPLY_DOMAIN", "notify.localhost"),
    ],
    ids=lambda v: v or "unset",
)
def test_serve_with_smtp_refuses_mail_that_cannot_be_trusted(
    tmp_path: Path, setting: str, value: str | None
) -> None:
    # Given SMTP configured and one of the addresses unset (its default, as the documented
    # `docker run` left it) or not a real one of the organisation's
    if value is None:
        result = serve(tmp_path, unset=setting)
    else:
        result = serve(tmp_path, **{setting: value})

    # Then the service does not start, and says which setting to change
    assert result.returncode == 2, result.stdout + result.stderr
    assert setting in result.stderr
    assert "OOS_NOTIFY_DEV_ALLOW_INSECURE_MAIL" in result.stderr


def test_a_password_is_never_sent_without_tls(tmp_path: Path) -> None:
    result = serve(
        tmp_path,
        OOS_NOTIFY_SMTP_SECURITY="none",
        OOS_NOTIFY_SMTP_USERNAME="oos-notify",
        OOS_NOTIFY_SMTP_PASSWORD="never-in-clear",
        OOS_NOTIFY_DEV_ALLOW_INSECURE_MAIL="true",
    )
    assert result.returncode == 2
    assert "OOS_NOTIFY_SMTP_SECURITY" in result.stderr
    assert "never-in-clear" not in result.stderr


def test_a_dkim_key_that_is_not_a_key_stops_the_start(tmp_path: Path) -> None:
    key = tmp_path / "dkim.key"
    key.write_text("not a key\n")
    result = serve(tmp_path, OOS_NOTIFY_DKIM_KEY_FILE=str(key), OOS_NOTIFY_DKIM_SELECTOR="oos2026")
    assert result.returncode == 2
    assert "OOS_NOTIFY_DKIM_KEY_FILE" in result.stderr and "RSA private key" in result.stderr


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


@pytest.mark.parametrize(
    ("port", "security"),
    [(465, SmtpSecurity.TLS), (587, SmtpSecurity.STARTTLS), (25, SmtpSecurity.STARTTLS)],
)
def test_tls_is_what_the_port_implies_unless_set(port: int, security: SmtpSecurity) -> None:
    assert settings(smtp_host="relay.example", smtp_port=port).effective_smtp_security is security
    explicit = settings(smtp_host="relay.example", smtp_port=port, smtp_security="none")
    assert explicit.effective_smtp_security is SmtpSecurity.NONE
    assert settings(smtp_host="relay.example").effective_smtp_port == 587


def test_the_ehlo_name_is_the_from_domain_never_localhost() -> None:
    assert settings(mail_from="oos@manufacturer.example").ehlo_name == "manufacturer.example"
    assert (
        settings(mail_from="oos@manufacturer.example", reply_domain="notify.manufacturer.example")
    ).ehlo_name == "notify.manufacturer.example"
    assert (
        settings(public_base_url="https://oos.manufacturer.example").ehlo_name
        == "oos.manufacturer.example"
    )
    assert settings().ehlo_name != "localhost"
    assert settings(smtp_ehlo_name="relay-out.manufacturer.example").ehlo_name == (
        "relay-out.manufacturer.example"
    )


class Relay(CaptureHandler):
    """A mail server that notes the name each client gives in EHLO, and each message's bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.raw: list[bytes] = []

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> Any:
        self.names.append(hostname)
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.raw.append(envelope.original_content or b"")
        return await super().handle_DATA(server, session, envelope)


async def test_a_production_setup_says_its_name_in_ehlo_and_signs_with_dkim(
    tmp_path: Path,
) -> None:
    # Given the production setup, over a relay on loopback, with a DKIM key
    key = tmp_path / "dkim.key"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        stdout=key.open("wb"),
        stderr=subprocess.DEVNULL,
        check=True,
    )
    public = subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    relay = Relay()
    with CaptureServer(handler=relay) as smtp:
        port = free_port()
        config = service_settings(
            tmp_path,
            smtp,
            smtp_security="none",
            dev_allow_insecure_mail=False,
            mail_from="oos-notify@manufacturer.example",
            reply_domain="notify.manufacturer.example",
            public_base_url="https://oos-notify.manufacturer.example",
            port=port,
            dkim_key_file=key,
            dkim_selector="oos2026",
        )
        clock = ManualClock(START)
        service = await start_service(config, clock)
        try:
            # When an incident opens
            await service.client.post(
                f"http://127.0.0.1:{port}/v1/events",
                json=release_failure(),
                headers=service.auth,
            )
            await service.settle()
            await received(smtp, 3)
        finally:
            await service.stop()

    # Then the service named itself by its From domain
    assert relay.names and set(relay.names) == {"notify.manufacturer.example"}
    # And each message verifies against the key published for the selector
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    asked: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        asked.append(name)
        return record if name == b"oos2026._domainkey.notify.manufacturer.example." else None

    for raw in relay.raw:
        assert raw.startswith(b"DKIM-Signature: ")
        assert b" d=notify.manufacturer.example;" in raw.partition(b"\r\nFrom:")[0]
        assert dkim.verify(raw, dnsfunc=dns)
    assert asked
