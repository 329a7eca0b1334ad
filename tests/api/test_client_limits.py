"""Per-client limits: a flood of wrong API keys or of forged acknowledgements from one address is
answered 429 after a few, while the QA system and the coordinators on other addresses go on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.web.pages import SECURITY_HEADERS
from tests.conftest import (
    RunningService,
    ack_link,
    received,
    release_failure,
    service_settings,
    start_service,
)

WRONG_KEY = {"Authorization": "Bearer oosk_0123456789_" + "x" * 43}


@pytest.fixture
async def limited(
    tmp_path: Path, smtp: CaptureServer, clock: ManualClock
) -> AsyncIterator[RunningService]:
    """A service allowing each client 3 failed authentications and 4 acknowledgement requests
    a minute: one every 20 and every 15 seconds once spent."""
    settings = service_settings(
        tmp_path, smtp, auth_failures_per_minute=3, ack_requests_per_minute=4
    )
    running = await start_service(settings, clock)
    try:
        yield running
    finally:
        await running.stop()


@asynccontextmanager
async def client_from(address: str, service: RunningService) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose connections come from ``address``: another host, on loopback."""
    async with httpx.AsyncClient(
        base_url=service.services.settings.public_base_url,
        transport=httpx.AsyncHTTPTransport(local_address=address),
        timeout=10,
    ) as client:
        yield client


def event(number: int) -> dict[str, object]:
    return release_failure(event_id=f"QA-EVT-CL-{number}", incident_ref=f"OOS-CL-{number}")


async def test_wrong_keys_from_one_client_get_429_while_the_qa_system_goes_on(
    limited: RunningService, clock: ManualClock
) -> None:
    async with (
        client_from("127.0.0.2", limited) as guesser,
        client_from("127.0.0.3", limited) as newcomer,
    ):
        # Given a client that sent 3 wrong keys, each told it is wrong
        for number in range(3):
            wrong = await guesser.post("/v1/events", json=event(number), headers=WRONG_KEY)
            assert wrong.status_code == 401, wrong.text

        # When it tries again, with a key or without one
        refused = await guesser.post("/v1/events", json=event(3), headers=WRONG_KEY)
        keyless = await guesser.get("/v1/incidents")

        # Then it is told to wait, and its attempts are not looked at
        for response in (refused, keyless):
            assert response.status_code == 429, response.text
            assert response.headers["retry-after"] == "20"
            detail = response.json()["detail"]
            assert "too many failed authentications from 127.0.0.2" in detail
            assert "at most 3 a minute" in detail
        right_key = await guesser.post("/v1/events", json=event(3), headers=limited.auth)
        assert right_key.status_code == 429

        # And the QA system on its own address goes on, however many requests it makes
        for number in range(5):
            assert (await limited.post_event(event(number))).status_code == 202
        listed = await limited.client.get("/v1/incidents", headers=limited.auth)
        assert len(listed.json()["items"]) == 5
        # As does another client still getting its key wrong: it has failures of its own left
        assert (await newcomer.get("/v1/incidents", headers=WRONG_KEY)).status_code == 401

        # Once 20 seconds have passed, the client may try once more
        clock.advance(timedelta(seconds=20))
        assert (await guesser.get("/v1/incidents", headers=limited.auth)).status_code == 200
        assert (await guesser.get("/v1/incidents", headers=WRONG_KEY)).status_code == 401
        assert (await guesser.get("/v1/incidents", headers=limited.auth)).status_code == 429


async def test_wrong_keys_on_a_decision_revision_count_as_failed_authentications(
    limited: RunningService,
) -> None:
    revision = {
        "response": "accept_oos_product",
        "decided_by": "mgm-md",
        "reason": "Decision given by telephone.",
        "proposed_for": {"name": "A. Rivera", "email": "qa@manufacturer.example"},
    }
    url = "/v1/incidents/inc_01JD0000000000000000000000/decision-revisions"
    async with client_from("127.0.0.2", limited) as guesser:
        # Given a client that sent 3 wrong keys to record a decision
        for _ in range(3):
            wrong = await guesser.post(url, json=revision, headers=WRONG_KEY)
            assert wrong.status_code == 401, wrong.text

        # Then it is refused before its key is looked at, on that endpoint as on every other
        for response in (
            await guesser.post(url, json=revision, headers=limited.auth),
            await guesser.post("/v1/events", json=event(0), headers=limited.auth),
        ):
            assert response.status_code == 429, response.text
            assert "too many failed authentications from 127.0.0.2" in response.json()["detail"]

    # While the QA system with its key reaches it (no such incident here)
    answer = await limited.client.post(url, json=revision, headers=limited.auth)
    assert answer.status_code == 404, answer.text


async def test_forged_acknowledgements_get_a_429_page_and_the_coordinator_still_confirms(
    limited: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given an open incident whose coordinator received a link
    opened = await limited.post_event(release_failure())
    assert opened.status_code == 202, opened.text
    await limited.settle()
    messages = await received(smtp, 3)
    link = ack_link(next(m for m in messages if "ct-coord@mercy.example" in m.recipients))

    async with client_from("127.0.0.2", limited) as forger:
        # When one client posts forged acknowledgements
        for number in range(4):
            forged = await forger.post(f"/ack/forged.{number}", data={"response": "received"})
            assert forged.status_code == 400, forged.text

        # Then, past its 4 a minute, it gets a plain page saying when to come back
        refused = await forger.post("/ack/forged.5", data={"response": "received"})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "15"
        assert refused.headers["content-type"].startswith("text/html")
        assert "Please try again in 15 seconds" in refused.text
        for name, value in SECURITY_HEADERS.items():
            assert refused.headers[name] == value
        # Whatever link it opens
        assert (await forger.get(link)).status_code == 429

        # While the coordinator, on another address, opens the link and confirms
        assert "please confirm" in (await limited.client.get(link)).text
        confirmed = await limited.client.post(link, data={"response": "received"})
        assert confirmed.status_code == 200 and "Thank you" in confirmed.text

        # And 15 seconds later the client may open one link again
        clock.advance(timedelta(seconds=15))
        assert (await forger.get(link)).status_code == 200
        assert (await forger.get(link)).status_code == 429
    incident = await limited.client.get(
        f"/v1/incidents/{opened.json()['incident_id']}", headers=limited.auth
    )
    assert incident.json()["status"] == "acknowledged"
