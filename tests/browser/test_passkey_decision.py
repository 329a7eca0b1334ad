"""A decider sets up a passkey from the link in their decision request and signs the decision
with it, in Chromium with a virtual authenticator (the DevTools protocol's WebAuthn domain: a
platform authenticator that verifies its user), against the real service and mail over SMTP.

WebAuthn needs a secure context and an RP ID that matches the page's host: the service is served
as ``http://localhost:PORT``, its public base URL, from which the RP ID and origin are derived.
(``http://127.0.0.1`` is a secure context too, but an IP address is no valid RP ID: Chromium
refuses it with "This is an invalid domain".)
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, CDPSession

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer, free_port
from oos_notify.settings import Settings
from tests.browser.conftest import PHONE, Tab, open_tab
from tests.conftest import (
    ACK_LINK,
    RunningService,
    received,
    release_failure,
    service_settings,
    start_service,
)
from tests.console.conftest import add_people, sign_in
from tests.console.conftest import browser as console_client
from tests.test_lifecycle import PHYSICIAN, follow_up

pytestmark = pytest.mark.asyncio(loop_scope="module")

PRINTED_NAME = "Dr. Lena Ortiz, CAR-T attending"
ENROL_LINK = re.compile(r"SET UP YOUR PASSKEY FIRST \(ONCE\)\s+(\S+)\s")


@pytest.fixture
def settings(tmp_path: Path, smtp: CaptureServer) -> Settings:
    port = free_port()
    return service_settings(tmp_path, smtp, port=port, public_base_url=f"http://localhost:{port}")


@pytest_asyncio.fixture(loop_scope="module")
async def service(settings: Settings, clock: ManualClock) -> AsyncIterator[RunningService]:
    """The service on the module's loop, where the browser runs."""
    running = await start_service(settings, clock)
    try:
        yield running
    finally:
        await running.stop()


async def with_authenticator(tab: Tab) -> tuple[CDPSession, str]:
    """Give the tab a platform authenticator that verifies its user (fingerprint, face, PIN)."""
    cdp = await tab.context.new_cdp_session(tab.page)
    await cdp.send("WebAuthn.enable", {"enableUI": False})
    added = await cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, str(added["authenticatorId"])


async def offered(service: RunningService, smtp: CaptureServer) -> tuple[str, str]:
    """The product offered for release; the incident id and the decision request's text."""
    opened = await service.post_event(release_failure())
    assert opened.status_code == 202, opened.text
    offer = follow_up("disposition", 200, disposition="oos_release_offered")
    assert (await service.post_event(offer)).status_code == 202
    await service.settle()
    messages = await received(smtp, 4)
    [request] = [m for m in messages if m.subject.startswith("Decision needed: ")]
    assert list(request.recipients) == [PHYSICIAN]
    return opened.json()["incident_id"], request.part("plain")


async def test_a_decider_enrols_a_passkey_from_the_email_and_signs_a_decision(
    browser: Browser, service: RunningService, smtp: CaptureServer
) -> None:
    # Given the physician's decision request, received over SMTP, with its enrolment link
    incident_id, request = await offered(service, smtp)
    found = ENROL_LINK.search(request)
    assert found, request
    enrol_link, decision_link = found.group(1), ack_link_in(request)
    assert enrol_link == f"{decision_link}/passkey"
    assert enrol_link.startswith(service.services.settings.public_base_url)

    # When the physician opens it on a phone with a passkey-capable authenticator
    tab = await open_tab(browser, service, PHONE)
    await with_authenticator(tab)
    page = tab.page
    await page.goto(enrol_link)
    assert await page.evaluate("() => window.isSecureContext")
    await page.get_by_role("heading", name="Set up your passkey to sign decisions").wait_for()
    await page.get_by_text(PRINTED_NAME).first.wait_for()
    await page.get_by_role("button", name="Set up my passkey").click()

    # Then the passkey is set up in the name the decision request was addressed to
    await page.get_by_text(
        f"Your passkey is set up. Your decisions are signed as {PRINTED_NAME}."
    ).wait_for()

    # When the physician opens the decision page, chooses, and signs with the passkey
    await page.goto(decision_link)
    await page.get_by_text("You sign a decision with your passkey, as").wait_for()
    await page.get_by_label("Decline the product").check()
    await page.get_by_role("button", name="Sign with passkey and record decision").click()

    # Then the decision is recorded
    await page.get_by_role("heading", name="Thank you — your decision is recorded").wait_for()
    await page.get_by_text(f"Signed by {PRINTED_NAME}").wait_for()
    tab.check()
    await tab.context.close()

    # And the incident's record names the enrolled person and the passkey
    async with console_client(service) as client:
        await sign_in(client, add_people(service).viewer)
        record = (await client.get(f"/console/incidents/{incident_id}/record")).text
    assert f"Signed by (printed name): <bdi>{PRINTED_NAME}</bdi>." in record
    assert "Signed with: <bdi>passkey (WebAuthn) the signer enrolled</bdi>." in record
    assert "Decline the product" in record


async def test_nothing_is_recorded_when_the_authenticator_does_not_verify_the_decider(
    browser: Browser, service: RunningService, smtp: CaptureServer
) -> None:
    # Given the physician set up a passkey on a device that then fails to verify them
    incident_id, request = await offered(service, smtp)
    found = ENROL_LINK.search(request)
    assert found
    tab = await open_tab(browser, service)
    cdp, authenticator = await with_authenticator(tab)
    page = tab.page
    await page.goto(found.group(1))
    await page.get_by_role("button", name="Set up my passkey").click()
    await page.get_by_text("Your passkey is set up.").wait_for()
    await cdp.send(
        "WebAuthn.setUserVerified", {"authenticatorId": authenticator, "isUserVerified": False}
    )

    # When the physician chooses a decision and presses sign
    await page.goto(ack_link_in(request))
    await page.get_by_label("Decline the product").check()
    await page.get_by_role("button", name="Sign with passkey and record decision").click()

    # Then the page says nothing was recorded, and nothing was
    await page.get_by_text("Not signed, nothing recorded:").wait_for()
    assert await page.get_by_role("heading", name="Decision needed").count() == 1
    decided = await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)
    assert decided.json()["decision"] is None
    tab.check()
    await tab.context.close()


def ack_link_in(text: str) -> str:
    """The decision link of a decision request's text (its enrolment link starts with it)."""
    found = set(ACK_LINK.findall(text))
    assert len(found) == 1, found
    return str(found.pop())
