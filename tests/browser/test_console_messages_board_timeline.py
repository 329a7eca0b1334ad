"""The console as the QA release desk works in it, in Chromium: an email opened from its
incident is the one the mail server received; the board puts first the incident whose key date
is nearest; a follow-up's entry names the dates it moved; what a cause brought about comes after
it, folded under it. axe-core finds nothing serious on these pages at 1280 and 390 px."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.async_api import Browser, Page, expect

from oos_notify.delivery.capture import CaptureServer
from tests.browser.conftest import PHONE, WIDE, axe_violations, blocking, open_tab
from tests.browser.test_console_story import sign_in
from tests.conftest import (
    ACK_LINK,
    START,
    RunningService,
    ack_link,
    received,
    release_failure,
)
from tests.console.conftest import add_people

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def accessible(page: Page, name: str) -> list[str]:
    return [f"{name}: {problem}" for problem in blocking(await axe_violations(page))]


async def test_an_email_opened_from_its_incident_is_the_one_the_server_received(
    browser: Browser, console: RunningService, smtp: CaptureServer
) -> None:
    people = add_people(console)
    incident_id = (await console.post_event(release_failure())).json()["incident_id"]
    await console.settle()
    first = await received(smtp, 3)
    coordinator = next(m for m in first if m.recipients == ("ct-coord@mercy.example",))

    problems: list[str] = []
    for viewport in (WIDE, PHONE):
        tab = await open_tab(browser, console, viewport)
        page = tab.page
        await sign_in(tab, people.viewer)
        await page.goto(f"/console/incidents/{incident_id}")
        await page.get_by_role(
            "link", name="Open the email as sent to Cell Therapy Coordinator"
        ).click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text("as sent")
        headers = page.get_by_role("region", name="Headers")
        await expect(headers).to_contain_text(coordinator.message_id)
        await expect(headers).to_contain_text("X-OOS-Notification")
        # The text as received, but for the confirmation link's key (it answers for the center)
        shown = await page.locator("pre.sent-text").text_content()
        assert shown is not None
        as_received = ACK_LINK.sub(
            lambda link: re.sub(r"/ack/.*", lambda key: "/ack/" + "X" * (len(key[0]) - 5), link[0]),
            coordinator.part("plain"),
        )
        assert as_received != coordinator.part("plain")
        assert shown.split() == as_received.split()
        frame = page.frame_locator("iframe.email")
        html_text = " ".join((await frame.locator("body").inner_text()).split())
        assert "OOS-2026-0142" in html_text
        attempts = page.get_by_role("region", name="Delivery attempts")
        await expect(attempts).to_contain_text("sent")
        await expect(attempts).to_contain_text("250")
        await expect(page.get_by_role("region", name="What came back")).to_contain_text(
            "Nothing came back"
        )
        problems += await accessible(page, f"email as sent at {viewport['width']} px")
        tab.check()
        await tab.context.close()
    assert not problems, "\n".join(problems)


async def test_the_board_puts_the_nearest_key_date_first(
    browser: Browser, console: RunningService
) -> None:
    people = add_people(console)
    day = START.date()

    def dates(days: int) -> dict[str, str]:
        return {
            "lymphodepletion_start": (day + timedelta(days=days)).isoformat(),
            "planned_infusion": (day + timedelta(days=days + 3)).isoformat(),
        }

    # Opened first and critical, but its patient starts lymphodepletion in twelve days
    await console.post_event(
        release_failure(
            event_id="E-FAR", incident_ref="OOS-FAR", severity="critical", key_dates=dates(12)
        )
    )
    await console.post_event(
        release_failure(event_id="E-NEAR", incident_ref="OOS-NEAR", key_dates=dates(2))
    )
    await console.settle()

    problems: list[str] = []
    for viewport in (WIDE, PHONE):
        tab = await open_tab(browser, console, viewport)
        page = tab.page
        await sign_in(tab, people.qa)
        refs = page.locator("table.board tbody th a.ref")
        await expect(refs).to_have_text(["OOS-NEAR", "OOS-FAR"])
        near = page.get_by_role("row", name=re.compile("OOS-NEAR"))
        await expect(near).to_contain_text("Lymphodepletion start: Thu 26 Nov 2026 in 2 days")
        await expect(near).to_contain_text("Planned infusion: Sun 29 Nov 2026 in 5 days")
        problems += await accessible(page, f"board at {viewport['width']} px")
        tab.check()
        await tab.context.close()
    assert not problems, "\n".join(problems)


async def test_a_follow_up_names_the_dates_it_moved_and_its_effects_fold_under_it(
    browser: Browser, console: RunningService, smtp: CaptureServer
) -> None:
    people = add_people(console)
    incident_id = (await console.post_event(release_failure())).json()["incident_id"]
    await console.settle()
    first = await received(smtp, 3)
    coordinator = next(m for m in first if m.recipients == ("ct-coord@mercy.example",))
    answered = await console.client.post(ack_link(coordinator), data={"response": "received"})
    assert answered.status_code == 200

    tab = await open_tab(browser, console, WIDE)
    page = tab.page
    await sign_in(tab, people.qa)
    await page.goto(f"/console/incidents/{incident_id}")
    await page.get_by_label("Planned infusion").fill("2026-12-05")
    await page.get_by_label("Update summary").fill("The patient's counts recovered late.")
    await page.get_by_role("button", name="Post update").click()
    await expect(page.get_by_role("status").first).to_contain_text("update event was recorded")
    await console.settle()

    timeline = page.locator("ol.timeline").first
    update = timeline.locator("> li.item", has_text="Update received")
    changes = update.get_by_role("list", name="What it changed")
    await expect(changes).to_have_text(
        re.compile(r"Planned infusion: Thu 3 Dec 2026 → changed to Sat 5 Dec 2026")
    )
    await expect(update).to_contain_text(f"Summary, by {people.qa}")
    await expect(update).to_contain_text("The patient's counts recovered late.")

    # The confirmation comes first; what it brought about is after it, folded under it
    confirmed = timeline.locator("> li.item", has_text="Confirmed: Received")
    effects = confirmed.locator("details.effects")
    status = effects.get_by_text("Status changed to confirmed", exact=True)
    await expect(effects).not_to_have_attribute("open", "")
    await expect(status).to_be_hidden()
    await effects.locator("summary").click()
    await expect(status).to_be_visible()
    cause_box = await confirmed.locator("> p.title").bounding_box()
    effect_box = await status.bounding_box()
    assert cause_box is not None and effect_box is not None
    assert effect_box["y"] > cause_box["y"]
    await expect(effects.locator(".st-cancelled")).to_have_count(6)
    # And the update's notices are under the update, not above it
    await expect(update.locator("details.effects")).to_contain_text("Follow-up notice to")

    # A change arriving redraws the timeline; what the reader unfolded stays unfolded
    posted = await console.post_event(
        {
            "event_id": "QA-EVT-MOVED-AGAIN",
            "type": "update",
            "incident_ref": "OOS-2026-0142",
            "occurred_at": START.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "center_id": "mercy-general-main",
            "key_dates": {"planned_infusion": "2026-12-07"},
        }
    )
    assert posted.status_code == 202, posted.text
    await expect(timeline).to_contain_text("Sat 5 Dec 2026 → changed to Mon 7 Dec 2026")
    await expect(status).to_be_visible()

    problems = await accessible(page, "incident at 1280 px, effects open")
    await page.set_viewport_size(PHONE)
    problems += await accessible(page, "incident at 390 px")
    tab.check()
    await tab.context.close()
    assert not problems, "\n".join(problems)
