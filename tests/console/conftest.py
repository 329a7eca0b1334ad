"""Console fixtures: people with accounts, and signing in the way a browser does (the form's
CSRF token read from the page, cookies kept by the client)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from oos_notify.delivery.capture import CaptureServer
from oos_notify.store.db import transaction
from oos_notify.web.console import accounts
from oos_notify.web.console.accounts import Role
from tests.conftest import START, RunningService, received, release_failure

QA_EMAIL = "rivera@manufacturer.example"
QA_NAME = "Ana Rivera"
SECOND_QA_EMAIL = "okafor@manufacturer.example"
SECOND_QA_NAME = "Ben Okafor"
VIEWER_EMAIL = "lead@manufacturer.example"
PASSWORD = "correct horse battery staple"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class People:
    qa: str = QA_EMAIL
    viewer: str = VIEWER_EMAIL


def add_people(service: RunningService) -> People:
    """A QA user and a viewer, as ``oos-notify user create`` makes them."""
    with transaction(service.services.engine) as session:
        accounts.create_user(session, QA_EMAIL, Role.QA, PASSWORD, START, name=QA_NAME)
        accounts.create_user(session, VIEWER_EMAIL, Role.VIEWER, PASSWORD, START)
    return People()


@pytest.fixture
def people(service: RunningService) -> People:
    return add_people(service)


def csrf_token(page: httpx.Response) -> str:
    found = _TOKEN.search(page.text)
    assert found, f"no CSRF token on {page.url}"
    return found.group(1)


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, next_url: str = ""
) -> httpx.Response:
    """Open the sign-in page and post its form; the answer, not followed."""
    form = await client.get("/console/sign-in")
    return await client.post(
        "/console/sign-in",
        data={
            "email": email,
            "password": password,
            "csrf_token": csrf_token(form),
            "next": next_url,
        },
    )


def browser(service: RunningService) -> httpx.AsyncClient:
    """A client with a cookie jar of its own, as a second browser would be."""
    return httpx.AsyncClient(base_url=service.client.base_url, timeout=10)


def add_second_qa(service: RunningService) -> str:
    """Another QA user, who can approve what the first one proposes."""
    with transaction(service.services.engine) as session:
        accounts.create_user(
            session, SECOND_QA_EMAIL, Role.QA, PASSWORD, START, name=SECOND_QA_NAME
        )
    return SECOND_QA_EMAIL


async def propose_revision(
    client: httpx.AsyncClient, incident_id: str, password: str = PASSWORD, **fields: str
) -> httpx.Response:
    """Propose a revision from the incident page's form, signed with ``password``."""
    page = await client.get(f"/console/incidents/{incident_id}")
    return await client.post(
        f"/console/incidents/{incident_id}/revisions",
        data={"csrf_token": csrf_token(page), "password": password, **fields},
    )


async def settle_revision(
    client: httpx.AsyncClient,
    incident_id: str,
    proposal_id: str,
    action: str,
    password: str = PASSWORD,
) -> httpx.Response:
    """Approve or reject (``action``) a proposed revision from the incident page, signed."""
    page = await client.get(f"/console/incidents/{incident_id}")
    return await client.post(
        f"/console/incidents/{incident_id}/revisions/{proposal_id}/{action}",
        data={"csrf_token": csrf_token(page), "password": password},
    )


@dataclass(frozen=True)
class MovedInfusion:
    """An incident whose planned infusion QA moved with a follow-up from the console, and the
    QA user's browser, still signed in."""

    incident_id: str
    client: httpx.AsyncClient


@pytest.fixture
async def moved_infusion(
    service: RunningService, smtp: CaptureServer, people: People
) -> AsyncIterator[MovedInfusion]:
    """A release failure whose planned infusion QA moves from Thu 3 to Sat 5 Dec 2026 with an
    update posted from the incident page, its notices sent."""
    incident_id = (await service.post_event(release_failure())).json()["incident_id"]
    await service.settle()
    await received(smtp, 3)
    async with browser(service) as client:
        await sign_in(client, people.qa)
        form = await client.get(f"/console/incidents/{incident_id}")
        event_id = re.search(r'name="event_id" value="([^"]+)"', form.text)
        assert event_id
        posted = await client.post(
            f"/console/incidents/{incident_id}/events",
            data={
                "csrf_token": csrf_token(form),
                "event_id": event_id.group(1),
                "type": "update",
                "key_date_planned_infusion": "2026-12-05",
                "summary": "Infusion moved: the patient's count recovered late.",
            },
        )
        assert posted.status_code == 303
        await service.settle()
        yield MovedInfusion(incident_id, client)
