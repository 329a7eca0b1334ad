"""The console in a real browser, as the QA desk uses it during an OOS event: sign in, watch a
new incident arrive on the board, open it, watch the center confirm, close it, and take the
incident record; and what it refuses: a wrong password, a viewer acting, a form without its
CSRF token."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect
from pypdf import PdfReader
from sqlmodel import Session, select

from oos_notify.delivery.capture import CaptureServer
from oos_notify.store import audit
from oos_notify.store.models import AuditEntry, Incident
from tests.browser.conftest import PHONE, WIDE, Tab, axe_violations, blocking, open_tab
from tests.conftest import RunningService, ack_link, received, release_failure
from tests.console.conftest import PASSWORD, add_people

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def sign_in(tab: Tab, email: str, password: str = PASSWORD) -> None:
    """Sign in with the keyboard alone, as someone who does not use a mouse would; return once
    the answer has loaded."""
    page = tab.page
    await page.goto("/console")
    await expect(page).to_have_url(re.compile(r"/console/sign-in\?next=/console$"))
    await expect(page.get_by_label("Email")).to_be_focused()
    await page.keyboard.type(email)
    await page.keyboard.press("Tab")
    await page.keyboard.type(password)
    async with page.expect_navigation():
        await page.keyboard.press("Enter")


async def test_a_new_incident_appears_on_the_board_without_a_reload(
    browser: Browser, console: RunningService
) -> None:
    people = add_people(console)
    tab = await open_tab(browser, console, WIDE, allowed=("status of 401",))
    page = tab.page

    await sign_in(tab, people.qa, "not the password")
    await expect(page.get_by_role("alert")).to_contain_text("Email or password is wrong")
    await expect(page).to_have_url(re.compile(r"/console/sign-in$"))

    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Open incidents")).to_be_visible()
    await expect(page.get_by_text("No open incidents.")).to_be_visible()
    [cookie] = [c for c in await tab.context.cookies() if c["name"] == "oos_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert await page.evaluate("() => document.cookie") == ""

    await page.evaluate("() => { window.stillTheSamePage = true; }")
    posted = await console.post_event(release_failure())
    assert posted.status_code == 202
    row = page.get_by_role("row", name=re.compile("OOS-2026-0142"))
    await expect(row).to_contain_text("Mercy General — Main Campus")
    await expect(row).to_contain_text("notifying")
    await expect(row).to_contain_text("not yet")
    assert await page.evaluate("() => window.stillTheSamePage") is True
    await expect(page.get_by_role("status")).to_contain_text(
        re.compile(r"Updated \w{3} \d{1,2} \w{3} \d{4}, \d\d:\d\d UTC\.")
    )
    tab.check()
    await tab.context.close()


async def test_qa_watches_the_center_confirm_then_resolves_and_takes_the_record(
    browser: Browser, console: RunningService, smtp: CaptureServer, tmp_path: Path
) -> None:
    people = add_people(console)
    incident_id = (await console.post_event(release_failure())).json()["incident_id"]
    await console.settle()
    first_notices = await received(smtp, 3)

    tab = await open_tab(browser, console, PHONE)
    page = tab.page
    await sign_in(tab, people.qa)
    await page.get_by_role("link", name="OOS-2026-0142").click()
    await expect(page.get_by_role("heading", name=re.compile("OOS-2026-0142"))).to_be_visible()
    timeline = page.locator("ol.timeline")
    await expect(timeline).to_contain_text("First notice to Cell Therapy Coordinator")
    await expect(timeline).to_contain_text("Escalation step 1 to Backup Coordinator")
    await expect(page.get_by_text("Nobody at the center has confirmed yet.")).to_be_visible()

    await page.get_by_role("link", name="Preview this email to Backup Coordinator").click()
    await expect(page.get_by_role("heading", name=re.compile("Escalation step 1"))).to_be_visible()
    await expect(page.locator("pre")).to_contain_text("OOS-2026-0142")
    await expect(page.locator("pre")).to_contain_text("/ack/link-issued-when-sent")
    await page.go_back()

    await page.evaluate("() => { window.stillTheSamePage = true; }")
    coordinator = next(m for m in first_notices if "ct-coord@mercy.example" in m.recipients)
    answered = await console.client.post(ack_link(coordinator), data={"response": "received"})
    assert answered.status_code == 200
    answers = page.get_by_role("region", name="Confirmations and decisions")
    await expect(answers).to_contain_text("Confirmed by Cell Therapy Coordinator (coordinator)")
    await expect(timeline).to_contain_text("Confirmed: Received — we are reviewing it")
    assert await page.evaluate("() => window.stillTheSamePage") is True

    await page.get_by_label("Resolved").check()
    await page.get_by_label("Closing summary").fill("Lot released within specification.")
    await page.get_by_label("Everyone told hears of it").check()
    await page.get_by_role("button", name="Close incident").click()
    await expect(page.get_by_role("status").first).to_contain_text("resolved event was recorded")
    await expect(timeline).to_contain_text("Resolved received")
    await expect(timeline).to_contain_text(f"by {people.qa}")
    await expect(timeline).to_contain_text("Status changed to resolved")
    await expect(page.get_by_role("button", name="Close incident")).to_have_count(0)

    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download PDF").click()
    download = await download_info.value
    assert download.suggested_filename == "incident-record-OOS-2026-0142.pdf"
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(saved.read_bytes())).pages)
    text = " ".join(text.split())

    with Session(console.services.engine) as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None and incident.status == "resolved"
        entries = session.exec(
            select(AuditEntry).where(AuditEntry.incident_id == incident_id)
        ).all()
        actors = {e.action: e.actor for e in entries}
        # The record is closed by the trail's digest as of the incident's newest entry (its own
        # export), which is what `oos-notify audit verify --as-of N` prints for that entry
        as_of = max(e.seq or 0 for e in entries)
        verified = audit.verify(session, as_of=as_of)
    assert verified.intact and verified.as_of == as_of
    compact = text.replace(" ", "")  # where a line wraps depends on the random ids before it
    assert f"Asofentry{as_of},sha256{verified.digest}" in compact
    assert coordinator.message_id in compact
    assert actors["console_event_posted"] == people.qa
    assert actors["incident_record_exported"] == people.qa
    tab.check()
    await tab.context.close()


async def test_a_viewer_reads_but_cannot_act(browser: Browser, console: RunningService) -> None:
    people = add_people(console)
    incident_id = (await console.post_event(release_failure())).json()["incident_id"]
    tab = await open_tab(browser, console, WIDE, allowed=("status of 403",))
    page = tab.page
    await sign_in(tab, people.viewer)
    await page.goto(f"/console/incidents/{incident_id}")
    await expect(page.get_by_text("Your role (viewer) reads.")).to_be_visible()
    await expect(page.get_by_role("button", name="Close incident")).to_have_count(0)

    token = await page.locator("input[name=csrf_token]").first.input_value()
    refused = await tab.context.request.post(
        f"/console/incidents/{incident_id}/events",
        form={"csrf_token": token, "event_id": "viewer-try", "type": "resolved", "confirm": "1"},
        max_redirects=0,
    )
    assert refused.status == 403
    assert "Your role can read but not act" in await refused.text()
    with Session(console.services.engine) as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None and incident.status == "notifying"
    tab.check()
    await tab.context.close()


async def test_a_form_without_its_csrf_token_is_refused(
    browser: Browser, console: RunningService
) -> None:
    people = add_people(console)
    incident_id = (await console.post_event(release_failure())).json()["incident_id"]
    tab = await open_tab(browser, console, WIDE)
    await sign_in(tab, people.qa)
    await expect(tab.page.get_by_role("heading", name="Open incidents")).to_be_visible()
    close = {"event_id": "forged-1", "type": "resolved", "confirm": "1"}
    for form in (close, {**close, "csrf_token": "forged"}):
        refused = await tab.context.request.post(
            f"/console/incidents/{incident_id}/events", form=form, max_redirects=0
        )
        assert refused.status == 403
        assert "Nothing was recorded" in await refused.text()
    with Session(console.services.engine) as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None and incident.status == "notifying"
        posted = session.exec(
            select(AuditEntry).where(AuditEntry.action == "console_event_posted")
        ).all()
    assert posted == []
    tab.check()
    await tab.context.close()


async def test_the_accessibility_check_finds_what_it_must(browser: Browser) -> None:
    """The check the page tests rely on is not blind: a bare input, faint text and an image
    without a text alternative are each reported."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.set_content(
        '<html lang="en"><title>t</title><main><input type="text">'
        '<p style="color:#ccc;background:#fff">faint</p><img src="data:,"></main></html>'
    )
    found = {v["id"]: v["impact"] for v in await axe_violations(page)}
    assert found.keys() >= {"label", "color-contrast", "image-alt"}
    assert blocking(await axe_violations(page))
    await context.close()
