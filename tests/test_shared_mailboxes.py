"""Attributable confirmations: a confirmation through a shared mailbox's link names the person
who confirmed, and the record (page, API, audit trail, QA's receipt, console) says "confirmed
by <name> via <address>"; an address that is one person's is not asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from oos_notify.agreements.config import Contact
from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CapturedMessage, CaptureServer
from oos_notify.settings import Settings
from tests.conftest import RunningService, ack_link, release_failure, start_service
from tests.console.conftest import add_people, browser, sign_in
from tests.shared_mailboxes import shared_coordinator_config
from tests.test_lifecycle import CELL_LAB, COORDINATOR, QA, detail, timeline

ATTRIBUTED = f"confirmed by Maria Lopez via {COORDINATOR}"


@pytest.fixture
async def shared(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[RunningService]:
    config = shared_coordinator_config(tmp_path)
    running = await start_service(settings.model_copy(update={"config_dir": config}), clock)
    try:
        yield running
    finally:
        await running.stop()


async def opened(service: RunningService, smtp: CaptureServer) -> tuple[str, dict[str, str]]:
    """An incident whose first notices went out, and each recipient's confirmation link."""
    answer = await service.post_event(release_failure())
    assert answer.status_code == 202, answer.text
    await service.settle()
    links = {m.recipients[0]: ack_link(m) for m in smtp.handler.messages()}
    return str(answer.json()["incident_id"]), links


def mail_to(messages: list[CapturedMessage], address: str) -> CapturedMessage:
    return next(m for m in messages if m.recipients == (address,))


async def test_a_shared_mailboxs_confirmation_records_the_person_who_confirmed(
    shared: RunningService, smtp: CaptureServer
) -> None:
    incident_id, links = await opened(shared, smtp)
    link = links[COORDINATOR]

    # Given the shared mailbox's page asks who is confirming
    page = await shared.client.get(link)
    assert "Who is confirming?" in page.text and 'name="confirmed_by"' in page.text

    # When it is confirmed without a name, nothing is recorded
    nameless = await shared.client.post(link, data={"response": "received", "confirmed_by": " "})
    assert nameless.status_code == 422
    assert "This address is a shared mailbox: write your name" in nameless.text
    assert (await detail(shared, incident_id))["acknowledgements"] == []

    # When a person confirms with their name
    before = len(smtp.handler.messages())
    confirmed = await shared.client.post(
        link, data={"response": "received", "confirmed_by": "  Maria Lopez "}
    )
    assert confirmed.status_code == 200, confirmed.text
    await shared.settle()

    # Then the page, the incident and the audit trail name her, via the mailbox
    assert "Confirmed by <strong><bdi>Maria Lopez</bdi></strong> via ct-coord@mercy.example" in (
        confirmed.text
    )
    state = await detail(shared, incident_id)
    assert state["status"] == "acknowledged"
    [ack] = state["acknowledgements"]
    assert (ack["by"], ack["confirmed_by"]) == (COORDINATOR, "Maria Lopez")
    [entry] = [e for e in await timeline(shared, incident_id) if e["action"] == "acknowledged"]
    assert entry["detail"]["attribution"] == ATTRIBUTED
    assert entry["detail"]["confirmed_by"] == "Maria Lopez"

    # And QA's receipt says who confirmed
    receipt = mail_to(smtp.handler.messages()[before:], QA)
    assert receipt.subject == "Confirmed by the center: OOS-2026-0142, lot LOT-24-1187"
    assert f"Who:              {ATTRIBUTED}" in receipt.part("plain")
    assert ATTRIBUTED in receipt.part("html")

    # And so does the console's incident page
    people = add_people(shared)
    async with browser(shared) as client:
        await sign_in(client, people.viewer)
        console = await client.get(f"/console/incidents/{incident_id}")
    assert ATTRIBUTED in console.text


async def test_an_address_of_one_person_is_not_asked_who_confirms(
    shared: RunningService, smtp: CaptureServer
) -> None:
    incident_id, links = await opened(shared, smtp)

    page = await shared.client.get(links[CELL_LAB])
    assert "Who is confirming?" not in page.text and 'name="confirmed_by"' not in page.text
    answer = await shared.client.post(
        links[CELL_LAB], data={"response": "received", "confirmed_by": "Somebody Else"}
    )

    assert answer.status_code == 200, answer.text
    [ack] = (await detail(shared, incident_id))["acknowledgements"]
    assert (ack["by"], ack["confirmed_by"]) == (CELL_LAB, None)
    [entry] = [
        e for e in await timeline(shared, incident_id) if e["action"] == "confirmation_recorded"
    ]
    assert "attribution" not in entry["detail"]


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("x" * 121, "at most 120 characters"),
        ("Maria\r\nBcc: x@evil.example", "Write your name on one line"),
        ("Maria \u202eLopez", "characters that change the direction of text"),
        ("Maria\x00Lopez", "Write your name on one line"),
    ],
)
async def test_a_confirmers_name_that_is_not_one_plain_line_is_refused(
    shared: RunningService, smtp: CaptureServer, name: str, says: str
) -> None:
    incident_id, links = await opened(shared, smtp)

    answer = await shared.client.post(
        links[COORDINATOR], data={"response": "received", "confirmed_by": name}
    )

    assert answer.status_code == 422
    assert says in answer.text
    assert (await detail(shared, incident_id))["acknowledgements"] == []


async def test_a_confirmers_name_with_markup_is_recorded_as_text_and_shown_escaped(
    shared: RunningService, smtp: CaptureServer
) -> None:
    incident_id, links = await opened(shared, smtp)
    hostile = "<script>alert(1)</script>"

    answer = await shared.client.post(
        links[COORDINATOR], data={"response": "received", "confirmed_by": hostile}
    )

    assert answer.status_code == 200
    assert hostile not in answer.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
    [ack] = (await detail(shared, incident_id))["acknowledgements"]
    assert ack["confirmed_by"] == hostile
    people = add_people(shared)
    async with browser(shared) as client:
        await sign_in(client, people.viewer)
        console = await client.get(f"/console/incidents/{incident_id}")
    assert hostile not in console.text


def test_a_shared_mailbox_cannot_be_a_decider() -> None:
    contact: dict[str, Any] = {
        "id": "mgm-coord",
        "name": "Cell Therapy Coordinator",
        "email": "ct-coord@mercy.example",
        "roles": ["physician"],
        "shared": True,
        "decider": True,
    }

    with pytest.raises(ValidationError, match="a shared mailbox cannot be a decider"):
        Contact.model_validate(contact)
