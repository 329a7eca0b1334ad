"""What must never leak: `oos-notify serve` runs a full incident, and neither its log nor any
answer it gives holds a chain-of-identity code, an acknowledgement token, an API key, the
signing key or the SMTP password."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from oos_notify.delivery.capture import CaptureHandler, free_port
from tests import databases
from tests.conftest import CONFIG_DIR, TEMPLATES_DIR, ack_link, now, release_failure

OOS_NOTIFY = str(Path(sys.executable).parent / "oos-notify")
SECRET_KEY = "signing-key-7f3a9c1e-never-shown"
SMTP_USER = "oos-notify"
SMTP_PASSWORD = "smtp-password-5d2b8e44-never-shown"
COI = "COI-8K2M-4471"
REFUSED = "celllab@mercy.example"


class AuthenticatedMailbox(CaptureHandler):
    """A mail server that wants a password and has no mailbox for the cell lab."""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address == REFUSED:
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    genuine = isinstance(data, LoginPassword) and (data.login, data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=genuine)


@dataclass
class Served:
    base: str
    api_key: str
    mailbox: AuthenticatedMailbox
    log: Path


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key: the service trusts it through
    ``SSL_CERT_FILE``, as a host trusts its organisation's own CA."""
    cert, key = directory / "relay.crt", directory / "relay.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    mailbox = AuthenticatedMailbox()
    smtp_port = free_port()
    cert, key = certificate(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    # The relay takes the password only over TLS, and the service asks for STARTTLS by default.
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=smtp_port,
        authenticator=authenticate,
        tls_context=tls,
        require_starttls=True,
        auth_require_tls=True,
    )
    controller.start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOS_NOTIFY_")}
    env |= {
        "OOS_NOTIFY_DATABASE_URL": databases.url_for(tmp_path),
        "OOS_NOTIFY_CONFIG_DIR": str(CONFIG_DIR),
        "OOS_NOTIFY_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "OOS_NOTIFY_SMTP_HOST": "127.0.0.1",
        "OOS_NOTIFY_SMTP_PORT": str(smtp_port),
        "OOS_NOTIFY_SMTP_USERNAME": SMTP_USER,
        "OOS_NOTIFY_SMTP_PASSWORD": SMTP_PASSWORD,
        "OOS_NOTIFY_SECRET_KEY": SECRET_KEY,
        "OOS_NOTIFY_PORT": str(port),
        "OOS_NOTIFY_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "OOS_NOTIFY_DEV_ALLOW_INSECURE_MAIL": "true",
        "SSL_CERT_FILE": str(cert),
    }
    log = tmp_path / "serve.log"
    created = subprocess.run(
        [OOS_NOTIFY, "apikey", "create", "--name", "qa"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    with log.open("w") as output:
        process = subprocess.Popen(
            [OOS_NOTIFY, "serve"], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield Served(base, created.stdout.strip(), mailbox, log)
    finally:
        process.terminate()
        process.wait(timeout=30)
        controller.stop()


def wait_for(condition: Any, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_full_incident_leaves_no_identifier_token_or_secret_in_the_log_or_answers(
    served: Served,
) -> None:
    auth = {"Authorization": f"Bearer {served.api_key}"}
    answers: list[httpx.Response] = []
    with httpx.Client(base_url=served.base, timeout=30) as client:
        # Given QA opens an incident; the cell lab's mailbox refuses it, the coordinator's takes it
        opened = client.post("/v1/events", json=release_failure(at=now()), headers=auth)
        assert opened.status_code == 202, opened.text
        incident = f"/v1/incidents/{opened.json()['incident_id']}"
        wait_for(lambda: len(served.mailbox.messages()) >= 1, "the coordinator's email")
        wait_for(
            lambda: any(
                n["status"] == "failed"
                for n in client.get(incident, headers=auth).json()["notifications"]
            ),
            "the refused delivery to be recorded",
        )
        link = ack_link(served.mailbox.messages()[0])
        token = link.rpartition("/ack/")[2]

        # When the coordinator opens and confirms, and clients make the usual mistakes
        answers += [
            client.get(link),
            client.post(link, data={"response": "received", "comment": "Dr. informed"}),
            client.post(link + "x", data={"response": "received"}),
            client.post("/v1/events", json=release_failure(at=now()), headers=auth),
            client.post("/v1/events", json={"chain_of_identity": COI}, headers={}),
            client.post(
                "/v1/events",
                json=release_failure(
                    at=now(), event_id="QA-2", chain_of_identity="no spaces allowed"
                ),
                headers=auth,
            ),
            client.get("/v1/incidents", headers={"Authorization": f"Bearer {served.api_key}x"}),
            client.get(incident, headers=auth),
            client.get(f"{incident}/timeline", headers=auth),
            client.get("/readyz"),
            client.get("/openapi.json"),
        ]
        wait_for(lambda: len(served.mailbox.messages()) >= 3, "the receipt and the brief")
        closed = client.post(
            "/v1/events",
            json=release_failure(at=now(), event_id="QA-3", type="resolved", failed_attributes=[]),
            headers=auth,
        )
        answers += [closed, client.get(incident, headers=auth)]
        assert closed.status_code == 202, closed.text
        failed = [n for n in answers[-1].json()["notifications"] if n["recipient"] == REFUSED]
        assert failed and "no such mailbox" in (failed[0]["last_error"] or "")

    # Then the log shows the work was done, by ids and addresses only
    log = served.log.read_text()
    assert "sent ntf_" in log and "POST /v1/events" in log and "/ack/…" in log
    for secret, what in [
        (COI, "a chain-of-identity code"),
        (token, "an acknowledgement token"),
        (served.api_key, "the API key"),
        (served.api_key.split("_", 2)[2], "the secret part of the API key"),
        (SECRET_KEY, "the signing key"),
        (SMTP_PASSWORD, "the SMTP password"),
    ]:
        assert secret not in log, f"{what} is in the log"
    assert not re.search(r"/ack/[A-Za-z0-9_-]{8,}", log), "a token is in the log"
    # And no answer holds a secret (identifiers are the API's business: QA sees its own COI)
    for response in answers:
        for secret in (served.api_key, SECRET_KEY, SMTP_PASSWORD):
            assert secret not in response.text, (response.request.url, response.text[:200])


def test_a_password_in_the_wrong_setting_is_refused_without_being_echoed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOS_NOTIFY_")}
    env |= {"OOS_NOTIFY_SMTP_PORT": SMTP_PASSWORD, "OOS_NOTIFY_SECRET_KEY": SECRET_KEY}
    for command in ("check-config", "serve"):
        result = subprocess.run(
            [OOS_NOTIFY, command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2
        assert "OOS_NOTIFY_SMTP_PORT: Input should be a valid integer" in result.stderr
        assert "Traceback" not in result.stderr
        assert SMTP_PASSWORD not in result.stderr + result.stdout
        assert SECRET_KEY not in result.stderr + result.stdout
