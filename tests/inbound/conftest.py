"""The service with a reply domain, reading returned mail through a real SMTP listener (the
default here) or a real IMAP server (a private Dovecot per test)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oos_notify.delivery.capture import CapturedMessage, CaptureServer, free_port
from oos_notify.return_addresses import ReturnAddresses
from oos_notify.settings import Settings
from tests.conftest import RunningService, received, release_failure, service_settings
from tests.inbound.dovecot import PASSWORD, USER, PrivateDovecot, available

REPLY_DOMAIN = "reply.manufacturer.example"
COORDINATOR = "ct-coord@mercy.example"
"""Who gets the first notice at mercy-general-main, with the physician and the cell lab."""
PHYSICIAN = "ct-md@mercy.example"
BACKUP_COORDINATOR = "ct-coord2@mercy.example"
LEVEL_ONE = {BACKUP_COORDINATOR, PHYSICIAN}
"""Who the standard plan's second step notifies: 2 business hours after the first."""
QA = "qa@manufacturer.example"
AUTHSERV_ID = "mx.manufacturer.example"
"""The manufacturer's own receiving server, whose Authentication-Results the service trusts."""


@pytest.fixture
def listener_port() -> int:
    return free_port()


def listener_settings(directory: Path, smtp: CaptureServer, listener_port: int) -> Settings:
    """Return addresses under the reply domain, and a listener on ``listener_port`` that
    trusts the manufacturer's receiving server: what comes back reaches the service."""
    return service_settings(
        directory,
        smtp,
        reply_domain=REPLY_DOMAIN,
        inbound="smtp",
        inbound_smtp_port=listener_port,
        inbound_authserv_id=AUTHSERV_ID,
    )


@pytest.fixture
def settings(tmp_path: Path, smtp: CaptureServer, listener_port: int) -> Settings:
    return listener_settings(tmp_path, smtp, listener_port)


@pytest.fixture
def dovecot() -> Iterator[PrivateDovecot]:
    if not available():
        if os.environ.get("CI"):
            pytest.fail("dovecot is not installed (apt-get install dovecot-imapd)")
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")
    server = PrivateDovecot()
    server.start()
    try:
        yield server
    finally:
        server.remove()


def imap_settings(
    directory: Path, smtp: CaptureServer, server: PrivateDovecot, **more: Any
) -> Settings:
    return service_settings(
        directory,
        smtp,
        reply_domain=REPLY_DOMAIN,
        inbound="imap",
        inbound_imap_host="127.0.0.1",
        inbound_imap_port=server.port,
        inbound_imap_username=USER,
        inbound_imap_password=PASSWORD,
        inbound_imap_security="none",
        inbound_authserv_id=AUTHSERV_ID,
        **more,
    )


def addresses(service: RunningService) -> ReturnAddresses:
    found = service.services.return_addresses
    assert found is not None
    return found


@dataclass
class Opened:
    incident_id: str
    notice: CapturedMessage
    """The first notice to the coordinator."""

    @property
    def notification_id(self) -> str:
        return str(self.notice.message["X-OOS-Notification"])


async def open_incident(service: RunningService, smtp: CaptureServer, **event: Any) -> Opened:
    """An incident whose first notices (coordinator, physician, cell lab) have gone out."""
    answer = await service.post_event(release_failure(**event))
    assert answer.status_code == 202, answer.text
    await service.settle()
    messages = await received(smtp, smtp.handler.count)
    notice = next(m for m in messages if m.recipients == (COORDINATOR,))
    return Opened(answer.json()["incident_id"], notice)


async def detail(service: RunningService, incident_id: str) -> dict[str, Any]:
    answer = await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)
    assert answer.status_code == 200
    result: dict[str, Any] = answer.json()
    return result


async def timeline(service: RunningService, incident_id: str) -> list[dict[str, Any]]:
    answer = await service.client.get(f"/v1/incidents/{incident_id}/timeline", headers=service.auth)
    assert answer.status_code == 200
    result: list[dict[str, Any]] = answer.json()
    return result


def sent_since(smtp: CaptureServer, count: int) -> list[CapturedMessage]:
    """What the mail server received after the first ``count`` messages."""
    return [m for m in smtp.handler.messages() if m.number > count]


async def until(check: Any, timeout: float = 10.0, explain: Any = None) -> None:
    """Wait until ``check()`` (awaited if need be) is true: for mail read from a mailbox, which
    the service takes in on its own time. On a timeout, ``explain()`` (awaited if need be) says
    what the state was, so that a failure in CI can be understood from its output alone."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() >= deadline:
            state = explain() if explain is not None else ""
            if asyncio.iscoroutine(state):
                state = await state
            raise AssertionError(f"timed out after {timeout} s{': ' if state else ''}{state}")
        await asyncio.sleep(0.05)
