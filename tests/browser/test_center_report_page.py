"""The page behind a notice's link, on a 390 px phone in Chromium: the coordinator tells the
manufacturer that lymphodepletion started and asks to be called, by label and keyboard as a
person would, and axe-core finds nothing on the page before or after."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, expect

from oos_notify.delivery.capture import CaptureServer
from tests.browser.conftest import PHONE, axe_violations, open_tab
from tests.conftest import START, RunningService, ack_link, received, release_failure

pytestmark = pytest.mark.asyncio(loop_scope="module")

COORDINATOR = "ct-coord@mercy.example"


async def _fits_and_passes(page: Page) -> None:
    violations = await axe_violations(page)
    assert violations == [], [f"{v['impact']}: {v['id']}: {v['help']}" for v in violations]
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide on a 390 px screen"


async def test_a_coordinator_reports_lymphodepletion_and_asks_for_a_call_on_a_phone(
    browser: Browser, console: RunningService, smtp: CaptureServer
) -> None:
    # Given the coordinator's first notice
    assert (await console.post_event(release_failure())).status_code == 202
    first = await received(smtp, 3)
    link = ack_link(next(m for m in first if m.recipients == (COORDINATOR,)))
    tab = await open_tab(browser, console, PHONE)
    page = tab.page

    # When she opens its link on a phone
    await page.goto(link)
    await expect(page.get_by_role("heading", name="Tell Example Therapeutics")).to_be_visible()
    await _fits_and_passes(page)

    # And says that lymphodepletion started today
    await page.get_by_role("radio", name="Lymphodepletion started").check()
    await page.get_by_label("Date, for a lymphodepletion started or postponed").fill(
        START.date().isoformat()
    )
    await page.get_by_role("button", name="Send to Example Therapeutics").click()

    # Then the page says so, shows the new date, and still passes
    status = page.get_by_role("status")
    await expect(status).to_contain_text("Lymphodepletion started on Tue 24 Nov 2026")
    await expect(
        page.get_by_role("row", name="Lymphodepletion start Tue 24 Nov 2026")
    ).to_be_visible()
    await _fits_and_passes(page)

    # When she asks to be called in the afternoon, by keyboard
    await page.get_by_role("radio", name="Please call me").check()
    await page.get_by_label("Number to call you on").fill("+1 312 555 0199")
    await page.get_by_label("Call from").fill("14:00")
    await page.get_by_label("Call until").fill("16:00")
    await page.get_by_label("Call until").press("Enter")

    # Then QA has been asked to call her on that number, in that window
    await expect(status).to_contain_text("asked to call you on +1 312 555 0199, 14:00-16:00")
    await _fits_and_passes(page)
    tab.check()
    await tab.context.close()
    detail = await console.client.get("/v1/incidents", headers=console.auth)
    incident_id = detail.json()["items"][0]["incident_id"]
    full = await console.client.get(f"/v1/incidents/{incident_id}", headers=console.auth)
    assert [r["kind"] for r in full.json()["center_reports"]] == [
        "lymphodepletion_started",
        "call_me",
    ]
