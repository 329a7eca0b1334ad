"""The incident page as a QA release desk works from it, in a real browser: a disposition chosen
on purpose and confirmed after seeing what it records and sends, a checklist confirmed from the
page that gates shipment as the API's does, the whole email in its preview, one way of writing
instants, and the actions first on a phone."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.async_api import Browser, expect
from sqlmodel import Session, select

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.store.models import Event, Incident
from tests.browser.conftest import PHONE, WIDE, Tab, assert_email_fits, axe_violations, open_tab
from tests.browser.test_console_story import sign_in
from tests.conftest import RunningService, received, release_failure
from tests.console.conftest import add_people

pytestmark = pytest.mark.asyncio(loop_scope="module")

INSTANT = re.compile(r"^[A-Z][a-z]{2} \d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d [A-Z]{2,5}$")
"""The one way the console writes an instant: ``Sun 6 Dec 2026, 20:33 CST``."""


async def opened(console: RunningService, smtp: CaptureServer) -> str:
    incident_id = (await console.post_event(release_failure())).json()["incident_id"]
    await console.settle()
    await received(smtp, 3)
    return str(incident_id)


def recorded_types(console: RunningService) -> set[str]:
    with Session(console.services.engine) as session:
        return set(session.exec(select(Event.type)))


async def open_incident(tab: Tab, incident_id: str) -> None:
    await tab.page.goto(f"/console/incidents/{incident_id}")
    await expect(tab.page.get_by_role("heading", name=re.compile("OOS-2026-0142"))).to_be_visible()


async def no_violations(tab: Tab) -> None:
    found = await axe_violations(tab.page)
    assert not found, [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in found]


async def test_an_empty_disposition_cannot_be_posted_and_the_step_shows_what_is_recorded(
    browser: Browser, console: RunningService, smtp: CaptureServer
) -> None:
    people = add_people(console)
    incident_id = await opened(console, smtp)
    tab = await open_tab(browser, console, WIDE)
    page = tab.page
    await sign_in(tab, people.qa)
    await open_incident(tab, incident_id)

    choice = page.locator("#disposition")
    await expect(choice).to_have_value("")
    await page.get_by_role("button", name="Review the disposition").click()
    assert await choice.evaluate("(el) => el.validity.valueMissing") is True
    await expect(page).to_have_url(re.compile(f"/console/incidents/{incident_id}$"))
    assert recorded_types(console) == {"release_failure"}

    await choice.select_option("oos_release_offered")
    await page.get_by_label("Disposition summary").fill("Offered under expanded access.")
    await page.get_by_role("button", name="Review the disposition").click()
    await expect(page.get_by_role("heading", name="Record this disposition?")).to_be_visible()
    to_record = page.locator("#to-record")
    await expect(to_record).to_contain_text(
        "Out-of-specification release offered for physician decision"
    )
    await expect(to_record).to_contain_text("US: single-patient expanded access")
    await expect(to_record).to_contain_text("Offered under expanded access.")
    to_send = page.locator("#to-send")
    await expect(to_send).to_contain_text("Decision request")
    await expect(to_send).to_contain_text("Dr. Lena Ortiz, CAR-T attending")
    assert recorded_types(console) == {"release_failure"}
    await no_violations(tab)
    await page.set_viewport_size(PHONE)
    await no_violations(tab)

    await page.get_by_role("button", name="Record and send").click()
    await expect(page.get_by_role("status").first).to_contain_text("disposition event was recorded")
    assert recorded_types(console) == {"release_failure", "disposition"}
    tab.check()
    await tab.context.close()


async def test_a_checklist_item_confirmed_from_the_console_gates_shipment_as_the_api_does(
    browser: Browser, console: RunningService, smtp: CaptureServer
) -> None:
    people = add_people(console)
    incident_id = await opened(console, smtp)
    tab = await open_tab(browser, console, WIDE, allowed=("status of 409",))
    page = tab.page
    await sign_in(tab, people.qa)
    await open_incident(tab, incident_id)
    await page.locator("#disposition").select_option("oos_release_offered")
    await page.get_by_label("Regulatory pathway").select_option("us-expanded-access")
    await page.get_by_role("button", name="Review the disposition").click()
    await page.get_by_role("button", name="Record and send").click()
    await expect(page.get_by_role("heading", name=re.compile("^Checklist"))).to_be_visible()

    await page.locator("#product-status").select_option("shipped")
    await page.get_by_role("button", name="Record where the product is").click()
    refusal = page.get_by_role("alert")
    await expect(refusal).to_contain_text("cannot be recorded as shipped")
    await expect(refusal).to_contain_text("risk_assessment")
    await no_violations(tab)

    for label, reference in (
        ("Manufacturer's risk assessment of the lot", "RA-2026-0142"),
        ("Treating physician's signed request form", "PR-2026-0142"),
        ("FDA single-patient IND / expanded-access authorisation", "IND-123456"),
    ):
        await page.get_by_label(re.compile("^" + re.escape(label))).fill(reference)
    await page.get_by_role("button", name="Confirm items").click()
    await expect(page.get_by_role("status").first).to_contain_text("update event was recorded")
    await expect(page.locator("ul.checklist")).to_contain_text("IND-123456, confirmed")

    await page.locator("#product-status").select_option("shipped")
    await page.get_by_role("button", name="Record where the product is").click()
    await expect(page.get_by_role("status").first).to_contain_text("update event was recorded")
    with Session(console.services.engine) as session:
        found = session.get(Incident, incident_id)
        assert found is not None and found.product_status == "shipped"
    tab.check()
    await tab.context.close()


async def test_the_preview_shows_the_whole_email_down_to_its_closing_line(
    browser: Browser, console: RunningService, smtp: CaptureServer
) -> None:
    people = add_people(console)
    incident_id = await opened(console, smtp)
    tab = await open_tab(browser, console, PHONE)
    page = tab.page
    await sign_in(tab, people.qa)
    await open_incident(tab, incident_id)
    await page.get_by_role("link", name="Preview this email to Backup Coordinator").click()
    await assert_email_fits(page)
    await no_violations(tab)
    tab.check()
    await tab.context.close()


async def test_instants_are_written_one_way_with_the_zone_named_and_actions_come_first_on_a_phone(
    browser: Browser, console: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    people = add_people(console)
    incident_id = await opened(console, smtp)
    tab = await open_tab(browser, console, PHONE)
    page = tab.page
    await sign_in(tab, people.qa)
    await open_incident(tab, incident_id)
    clock.advance(timedelta(minutes=1))  # the next live refresh brings the page anew
    await expect(page.locator("#incident-status")).to_contain_text(
        re.compile(r"Updated \w{3} \d{1,2} \w{3} \d{4}, \d\d:\d\d C[SD]T\.")
    )
    times = await page.locator("main time").evaluate_all(
        "(els) => els.map((el) => [el.textContent, el.title])"
    )
    assert len(times) > 5
    for text, title in times:
        assert INSTANT.match(text), text
        assert title.startswith("Your time: ") and title.endswith(" EST"), title
    body = await page.locator("main").inner_text()
    assert not re.search(r"\d:\d\d:\d\d (AM|PM)", body)
    assert not re.search(r"\b\d{1,2}/\d{1,2}/\d{4}\b", body)
    key_dates = page.get_by_role("region", name="Facts")
    day = re.compile(r"Planned infusion\s*[A-Z][a-z]{2} \d{1,2} [A-Z][a-z]{2} \d{4}")
    await expect(key_dates).to_contain_text(day)

    # At 390 px, what QA can do comes before the long timeline
    actions = await page.get_by_role("heading", name="Disposition", exact=True).bounding_box()
    timeline = await page.get_by_role("heading", name="Timeline", exact=True).bounding_box()
    heading = await page.get_by_role("heading", name=re.compile("OOS-2026-0142")).bounding_box()
    assert actions and timeline and heading
    assert heading["y"] < actions["y"] < timeline["y"]
    await no_violations(tab)
    tab.check()
    await tab.context.close()
