"""Fixtures that build the real thing: a database (a SQLite file, or a PostgreSQL database of its
own: see ``databases``), SMTP on loopback, the app on a port."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CapturedMessage, CaptureServer, free_port
from oos_notify.settings import Settings
from oos_notify.store import apikeys
from oos_notify.store.db import transaction
from oos_notify.web.app import create_app
from oos_notify.web.services import Role, Services
from tests import databases

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "config"
TEMPLATES_DIR = ROOT / "templates"
START = datetime(2026, 11, 24, 15, 12, tzinfo=UTC)  # Tuesday 09:12 in Chicago
ACK_LINK = re.compile(r"https?://[^\s\"'<>]+/ack/[A-Za-z0-9_.\-]+")


def command_env(workspace: Path) -> dict[str, str]:
    """The environment of an ``oos-notify`` command run on ``workspace``'s config and database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOS_NOTIFY_")}
    return env | {
        "OOS_NOTIFY_CONFIG_DIR": str(workspace / "config"),
        "OOS_NOTIFY_TEMPLATES_DIR": str(workspace / "templates"),
        "OOS_NOTIFY_DATABASE_URL": databases.url_for(workspace),
        "OOS_NOTIFY_PORT": str(free_port()),
    }


def release_failure(
    *, at: datetime = START - timedelta(minutes=2), **overrides: Any
) -> dict[str, Any]:
    """The SPEC's example event, occurring at ``at`` with its key dates days after it, with
    whatever a test changes. ``at`` defaults to just before the test clock's START; a test that
    runs the real service on the wall clock passes ``at=now()``, so no date in it ever passes."""
    day = at.date()
    event: dict[str, Any] = {
        "event_id": "QA-EVT-2026-000123",
        "type": "release_failure",
        "incident_ref": "OOS-2026-0142",
        "occurred_at": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "center_id": "mercy-general-main",
        "product_code": "CARTX",
        "lot_number": "LOT-24-1187",
        "chain_of_identity": "COI-8K2M-4471",
        "severity": "major",
        "failed_attributes": [
            {
                "attribute": "viability",
                "specification": ">= 80 %",
                "result": "71 %",
                "method": "flow cytometry 7-AAD",
            }
        ],
        "disposition": "under_investigation",
        "key_dates": {
            "lymphodepletion_start": (day + timedelta(days=6)).isoformat(),
            "planned_infusion": (day + timedelta(days=9)).isoformat(),
        },
        "summary": "Final product viability below specification. Investigation opened.",
        "qa_contact": {
            "name": "A. Rivera",
            "email": "qa@manufacturer.example",
            "phone": "+1 555 0100",
        },
    }
    event.update(overrides)
    return event


def now() -> datetime:
    """The wall clock, for tests that run ``oos-notify serve`` as it runs in production."""
    return datetime.now(UTC)


def ack_link(message: CapturedMessage) -> str:
    """The acknowledgement link of a received email, taken from its text part."""
    found = ACK_LINK.findall(message.part("plain"))
    assert len(set(found)) == 1, f"expected one ack link in {message.subject!r}, found {found}"
    return str(found[0])


@pytest.fixture(autouse=True)
def own_databases() -> Iterator[None]:
    """Drop the PostgreSQL databases a test made, once it is over (SQLite files go with
    ``tmp_path``)."""
    mark = databases.created()
    yield
    databases.drop_since(mark)


@pytest.fixture
def smtp() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def settings(tmp_path: Path, smtp: CaptureServer) -> Settings:
    return service_settings(tmp_path, smtp)


def service_settings(directory: Path, smtp: CaptureServer | None, **overrides: Any) -> Settings:
    """Settings for a service with its database in ``directory``, sending to ``smtp`` (or, when
    None, to the embedded capture server that /dev/mailbox shows)."""
    port = free_port()
    values: dict[str, Any] = {
        "database_url": databases.url_for(directory),
        "config_dir": CONFIG_DIR,
        "templates_dir": TEMPLATES_DIR,
        "smtp_host": smtp.host if smtp else None,
        "smtp_port": smtp.port if smtp else None,
        # A sink on loopback, without TLS, links to a loopback port: development, as named.
        "smtp_security": "none",
        "dev_allow_insecure_mail": True,
        "secret_key": "test-secret-key-not-for-production",
        "host": "127.0.0.1",
        "port": port,
        "public_base_url": f"http://127.0.0.1:{port}",
        "sweep_interval_seconds": 3600,
    }
    return Settings(_env_file=None, **{**values, **overrides})


@dataclass
class RunningService:
    """The real app served by uvicorn on a loopback port, and an HTTP client for it."""

    app: FastAPI
    server: uvicorn.Server
    task: asyncio.Task[None]
    client: httpx.AsyncClient
    api_key: str

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    async def post_event(self, event: dict[str, Any]) -> httpx.Response:
        return await self.client.post("/v1/events", json=event, headers=self.auth)

    async def settle(self) -> None:
        """Let the dispatcher send everything due at the clock's current time."""
        assert self.services.dispatcher is not None
        await self.services.dispatcher.run_until_idle()

    async def stop(self) -> None:
        await self.client.aclose()
        self.server.should_exit = True
        await self.task


async def start_service(
    settings: Settings, clock: ManualClock, api_key: str | None = None, role: Role = Role.SERVE
) -> RunningService:
    app = create_app(settings, clock, role)
    services: Services = app.state.services
    if api_key is None:
        with transaction(services.engine) as session:
            api_key = apikeys.create(session, "test-qa-system", clock.now())
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level="warning", lifespan="on"
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    client = httpx.AsyncClient(base_url=settings.public_base_url, timeout=10)
    return RunningService(app, server, task, client, api_key)


@pytest.fixture
async def service(settings: Settings, clock: ManualClock) -> AsyncIterator[RunningService]:
    running = await start_service(settings, clock)
    try:
        yield running
    finally:
        await running.stop()


async def received(smtp: CaptureServer, count: int, timeout: float = 10.0) -> list[CapturedMessage]:
    """The messages the SMTP server accepted, once at least ``count`` arrived in all."""
    messages = await asyncio.to_thread(smtp.handler.wait_for, count, timeout)
    assert len(messages) >= count, f"expected {count} messages, got {len(messages)}"
    return messages
