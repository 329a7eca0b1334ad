"""The emails a coordinator opens on a phone, rendered by Chromium at 390 px: what to do, and by
when, is on the first screen, above the facts.

Set ``EMAIL_SCREENSHOTS`` to a folder to keep a PNG of each (the ones in docs/screenshots come
from such a run).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Locator

from oos_notify.delivery.capture import CaptureServer, free_port
from oos_notify.settings import Settings
from tests.browser.conftest import PHONE, open_tab
from tests.conftest import RunningService, release_failure, service_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

COORDINATOR = "ct-coord@mercy.example"
FIRST_SCREEN = 700
"""Pixels of a 390 x 844 phone screen left for the message once the mail app's own bars are
drawn."""


@pytest.fixture
def settings(tmp_path: Path, smtp: CaptureServer) -> Settings:
    """The production setup's return addresses: replies to a notice are read, and the own
    receiving server's results say who sent them, so a reply "received" confirms."""
    return service_settings(
        tmp_path,
        smtp,
        reply_domain="notify.manufacturer.example",
        inbound="smtp",
        inbound_smtp_port=free_port(),
        inbound_authserv_id="mx.manufacturer.example",
    )


LATE_STERILITY = release_failure(
    type="late_result",
    severity=None,
    product_status="at_center",
    failed_attributes=[
        {
            "attribute": "sterility",
            "specification": "no growth",
            "result": "growth at day 9 (gram-positive cocci)",
            "method": "BacT/ALERT, 14 days",
        }
    ],
    summary="Sterility culture positive after release.",
)


async def top_of(element: Locator) -> float:
    await element.wait_for()
    box = await element.bounding_box()
    assert box is not None
    return float(box["y"])


@pytest.mark.parametrize(
    ("event", "instruction", "deadline", "screenshot"),
    [
        (
            release_failure(),
            "Confirm receipt with the button below",
            "Tue 24 Nov 2026, 11:12 CST",
            "email-first-notice-390.png",
        ),
        (
            LATE_STERILITY,
            "Quarantine the product: do not thaw it and do not infuse it.",
            "Tue 24 Nov 2026, 09:42 CST",
            "email-late-result-390.png",
        ),
    ],
    ids=["first-notice", "late-result"],
)
async def test_a_phone_shows_the_action_and_its_deadline_on_the_first_screen(
    browser: Browser,
    console: RunningService,
    smtp: CaptureServer,
    event: dict[str, Any],
    instruction: str,
    deadline: str,
    screenshot: str,
) -> None:
    # Given the first notice of an incident, as the coordinator receives it
    assert (await console.post_event(event)).status_code == 202
    await console.settle()
    [notice] = [m for m in smtp.handler.messages() if m.recipients == (COORDINATOR,)]

    # When it is opened on a phone 390 px wide
    tab = await open_tab(browser, console, PHONE)
    try:
        await tab.page.set_content(notice.part("html"))
        page = tab.page

        # Then the instruction, the deadline and the Confirm button are on the first screen
        confirm = page.get_by_role("link", name="Confirm you have received this")
        action = page.get_by_text(instruction)
        due = page.get_by_text(f"Confirm by {deadline}.")
        for element in (action, due, confirm):
            assert await top_of(element) < FIRST_SCREEN, await element.inner_text()
        # And above the facts, with the link's destination written under the button
        assert await top_of(confirm) < await top_of(page.get_by_text("What failed"))
        assert await page.get_by_text(f"Opens {console.client.base_url}/…").is_visible()
        assert await page.get_by_text('Replying to this email with "received"').is_visible()
        # And nothing is wider than the phone
        width = await page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"]
        if folder := os.environ.get("EMAIL_SCREENSHOTS"):
            await page.screenshot(path=str(Path(folder) / screenshot))
        tab.check()
    finally:
        await tab.context.close()
