"""A decision revision approved in a real browser: the meaning stands before the password field,
a wrong password signs nothing, and the second QA user's signature makes it take effect."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, expect

from oos_notify.delivery.capture import CaptureServer
from tests.browser.conftest import WIDE, axe_violations, blocking, open_tab
from tests.browser.test_console_story import sign_in
from tests.conftest import RunningService, release_failure
from tests.console.conftest import SECOND_QA_NAME, add_people, add_second_qa
from tests.test_lifecycle import follow_up

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_a_second_qa_user_approves_a_proposed_revision_with_their_password(
    browser: Browser, console: RunningService, smtp: CaptureServer
) -> None:
    add_people(console)
    second = add_second_qa(console)
    incident_id = (await console.post_event(release_failure())).json()["incident_id"]
    offer = follow_up("disposition", 200, disposition="oos_release_offered")
    assert (await console.post_event(offer)).status_code == 202
    proposed = await console.client.post(
        f"/v1/incidents/{incident_id}/decision-revisions",
        json={
            "response": "decline_product",
            "decided_by": "mgm-md",
            "reason": "Declined by telephone after the callback.",
        },
        headers=console.auth,
    )
    assert proposed.status_code == 202, proposed.text
    proposal_id = proposed.json()["id"]

    tab = await open_tab(browser, console, WIDE, allowed=("status of 401",))
    page = tab.page
    await sign_in(tab, second)
    await page.goto(f"/console/incidents/{incident_id}")
    card = page.get_by_role("region", name="Decision revisions")
    await expect(card).to_contain_text("Pending: Decline the product")
    await expect(card).to_contain_text("You sign: I approve this revision")
    assert blocking(await axe_violations(page)) == []

    password = page.locator(f"#approve-pw-{proposal_id}")
    await password.fill("not my password")
    await page.get_by_role("button", name="Approve and sign").click()
    await expect(page.get_by_role("alert")).to_contain_text("That is not your password")
    await expect(card).to_contain_text("Pending: Decline the product")

    await page.locator(f"#approve-pw-{proposal_id}").fill("correct horse battery staple")
    await page.get_by_role("button", name="Approve and sign").click()
    await expect(page.get_by_role("status").first).to_contain_text(
        "The revision is approved, signed, and in force"
    )
    await expect(card).to_contain_text("Approved: Decline the product")
    await expect(card).to_contain_text(re.compile(f"Approved by\\s*{SECOND_QA_NAME}"))
    await expect(page.get_by_role("button", name="Approve and sign")).to_have_count(0)
    tab.check()
    await tab.context.close()
