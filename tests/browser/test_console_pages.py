"""Every console page, at 1280 and 390 px, on a service with months of history: axe-core finds
no serious or critical violation, and the skip link leads the keyboard to the content.

Set ``CONSOLE_SCREENSHOTS`` to a folder to keep a PNG of each page at each width (the ones in
docs/screenshots come from such a run), and ``CONSOLE_AXE_REPORT`` to a file to keep every
violation found, by page and impact.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.async_api import Browser, Page, expect
from sqlmodel import Session, select

from oos_notify.clock import ManualClock
from oos_notify.settings import Settings
from oos_notify.store.models import Notification
from tests.browser.conftest import (
    PHONE,
    WIDE,
    assert_email_fits,
    axe_violations,
    blocking,
    open_tab,
)
from tests.browser.test_console_story import sign_in
from tests.conftest import ACK_LINK, START, RunningService, release_failure, service_settings
from tests.console.conftest import PASSWORD, add_people

pytestmark = pytest.mark.asyncio(loop_scope="module")

HISTORY_DAYS = 150
LONG_PAGES = ("mailbox", "incident-record")
"""Pages shot as the first screenful only: in full they are many screens of similar rows."""


@pytest.fixture
def clock() -> ManualClock:
    """Months before the usual start: the reports need history."""
    return ManualClock(START - timedelta(days=HISTORY_DAYS))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """No SMTP server: mail goes to the embedded capture server, so the mailbox page exists."""
    return service_settings(tmp_path, None)


class Story:
    """Incidents made through the API and answered through their emails' links."""

    def __init__(self, service: RunningService, clock: ManualClock) -> None:
        self.service = service
        self.clock = clock
        self.count = 0

    async def open(self, center: str, **overrides: Any) -> tuple[str, str]:
        self.count += 1
        ref = f"OOS-2026-{100 + self.count:04d}"
        event = release_failure(
            at=self.clock.now(),
            event_id=f"QA-EVT-{self.count:06d}",
            incident_ref=ref,
            center_id=center,
            **overrides,
        )
        response = await self.service.post_event(event)
        assert response.status_code == 202, response.text
        return ref, str(response.json()["incident_id"])

    async def follow_up(self, ref: str, center: str, kind: str, **fields: Any) -> None:
        self.count += 1
        event = {
            "event_id": f"QA-EVT-{self.count:06d}",
            "type": kind,
            "incident_ref": ref,
            "occurred_at": self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "center_id": center,
            **fields,
        }
        response = await self.service.post_event(event)
        assert response.status_code == 202, response.text

    async def confirm(self, ref: str, response: str = "received") -> None:
        """The center's coordinator answers from their email's link: a cell lab's answer, also
        in the first step, would stop nothing."""
        capture = self.service.services.capture
        assert capture is not None
        with Session(self.service.services.engine) as session:
            coordinators = set(
                session.exec(select(Notification.id).where(Notification.role == "coordinator"))
            )
        message = next(
            m
            for m in capture.handler.messages()
            if ref in m.subject
            and ACK_LINK.search(m.part("plain"))
            and str(m.message["X-OOS-Notification"]) in coordinators
        )
        link = ACK_LINK.findall(message.part("plain"))[0]
        # A shared mailbox's page asks who confirms; another address's ignores the name
        answered = await self.service.client.post(
            link, data={"response": response, "confirmed_by": "Dana Ortiz"}
        )
        assert answered.status_code == 200

    async def settle(self, after: timedelta = timedelta(0)) -> None:
        self.clock.advance(after)
        await self.service.settle()


async def history(story: Story) -> None:
    """Five months of incidents at three centers, each confirmed after its own delay and
    resolved; every fourth one's first notice sent late."""
    centers = ["mercy-general-main", "mercy-west", "rhein-uk-bonn"]
    delays = [12, 35, 80, 20, 150, 45, 25, 300, 60, 15, 95, 40]
    for round_ in range(12):
        for index, center in enumerate(centers):
            ref, _ = await story.open(center)
            late = (round_ * 3 + index) % 4 == 3
            await story.settle(timedelta(hours=9) if late else timedelta(0))
            await story.settle(timedelta(minutes=delays[(round_ + index * 5) % len(delays)]))
            await story.confirm(ref)
            await story.settle(timedelta(hours=2))
            await story.follow_up(ref, center, "resolved")
            await story.settle()
        story.clock.advance(timedelta(days=12))


async def today(story: Story) -> dict[str, str]:
    """The board as it stands at START: four open incidents in different states."""
    story.clock.advance(START - timedelta(hours=3) - story.clock.now())
    opened = {}
    ref, opened["escalating"] = await story.open("mercy-general-main")
    await story.settle()
    story.clock.advance(timedelta(minutes=30))
    _, opened["breached"] = await story.open(
        "rhein-uk-bonn",
        severity="critical",
        failed_attributes=[
            {"attribute": "sterility", "specification": "no growth", "result": "growth at day 5"}
        ],
    )
    await story.settle(timedelta(minutes=65))
    await story.settle(timedelta(minutes=45))
    ref, opened["deciding"] = await story.open("mercy-west")
    await story.settle()
    await story.settle(timedelta(minutes=15))
    await story.confirm(ref)
    await story.settle(timedelta(minutes=15))
    await story.follow_up(ref, "mercy-west", "disposition", disposition="oos_release_offered")
    await story.settle()
    story.clock.advance(START - timedelta(minutes=5) - story.clock.now())
    _, opened["new"] = await story.open("mercy-general-main", type="late_result", severity=None)
    await story.settle()
    story.clock.advance(START - story.clock.now())
    return opened


async def visit(page: Page, url: str, heading: str) -> None:
    await page.goto(url)
    await expect(page.get_by_role("heading", level=1)).to_contain_text(heading)


async def test_every_page_is_accessible_at_both_widths(
    browser: Browser, console: RunningService, clock: ManualClock
) -> None:
    people = add_people(console)
    story = Story(console, clock)
    await history(story)
    opened = await today(story)
    with Session(console.services.engine) as session:
        scheduled = session.exec(
            select(Notification).where(
                Notification.incident_id == opened["escalating"],
                Notification.status == "scheduled",
            )
        ).first()
        sent = session.exec(
            select(Notification).where(
                Notification.incident_id == opened["escalating"],
                Notification.status == "sent",
            )
        ).first()
    assert scheduled is not None and sent is not None
    capture = console.services.capture
    assert capture is not None
    decision_mail = next(m for m in capture.handler.messages() if "decision" in m.subject.lower())
    pages = [
        ("board", "/console", "Open incidents"),
        ("incident", f"/console/incidents/{opened['deciding']}", "OOS-2026"),
        (
            "email-preview",
            f"/console/incidents/{opened['escalating']}/notifications/{scheduled.id}",
            "Escalation step",
        ),
        (
            "email-as-sent",
            f"/console/incidents/{opened['escalating']}/notifications/{sent.id}/sent",
            "as sent",
        ),
        ("incident-record", f"/console/incidents/{opened['deciding']}/record", "Incident record"),
        ("centers", "/console/centers", "Centers"),
        (
            "center",
            "/console/centers/mercy-general-main?lymphodepletion_start=2026-11-27",
            "Mercy General",
        ),
        ("agreement-history", "/console/centers/agreements/history", "History of the agreements"),
        ("reports", "/console/reports?months=6", "Reports"),
        ("mailbox", "/console/mailbox", "Captured mail"),
        ("mailbox-message", f"/console/mailbox/{decision_mail.number}", decision_mail.subject[:20]),
    ]
    shots = os.environ.get("CONSOLE_SCREENSHOTS")
    found: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    for width, viewport in (("1280", WIDE), ("390", PHONE)):
        tab = await open_tab(browser, console, viewport)
        page = tab.page
        await visit(page, "/console/sign-in", "Sign in")
        checked = [("sign-in", page)]
        found_here = await _check(page, "sign-in", width, shots, found, problems)
        await page.get_by_label("Email").fill(people.qa)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", name="Open incidents")).to_be_visible()
        for name, url, heading in pages:
            await visit(page, url, heading)
            await _check(page, name, width, shots, found, problems)
        await visit(page, f"/console/incidents/{opened['escalating']}", "OOS-2026")
        await page.locator("#disposition").select_option("remanufacture")
        await page.get_by_role("button", name="Review the disposition").click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text("Record this")
        await _check(page, "disposition-confirm", width, shots, found, problems)
        del checked, found_here

        await page.goto("/console")
        await page.keyboard.press("Tab")
        await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        await page.keyboard.press("Enter")
        await expect(page.locator("main")).to_be_focused()
        tab.check()
        await tab.context.close()

    report = os.environ.get("CONSOLE_AXE_REPORT")
    if report:
        Path(report).write_text(json.dumps(found, indent=2, sort_keys=True), encoding="utf-8")
    assert not problems, "\n".join(problems)


async def _check(
    page: Page,
    name: str,
    width: str,
    shots: str | None,
    found: dict[str, dict[str, int]],
    problems: list[str],
) -> None:
    violations = await axe_violations(page)
    found[f"{name} {width}"] = dict(
        Counter(str(v["impact"]) for v in violations for _ in v["nodes"])
    )
    problems += [f"{name} at {width} px: {p}" for p in blocking(violations)]
    if shots:
        # Chromium paints a sandboxed frame only once it has been on screen
        for frame in await page.locator("iframe").all():
            await frame.scroll_into_view_if_needed()
            await page.evaluate(
                "() => new Promise((r) => requestAnimationFrame(() => setTimeout(r)))"
            )
        path = Path(shots) / f"{name}-{width}.png"
        await page.screenshot(path=path, full_page=name not in LONG_PAGES)
        # A palette of 256 colours keeps a screenshot of text and flat colours a third the size.
        Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


async def test_a_captured_email_is_shown_whole_in_the_mailbox(
    browser: Browser, console: RunningService, clock: ManualClock
) -> None:
    # Given a first notice caught by the capture server, today
    people = add_people(console)
    clock.advance(START - clock.now())
    posted = await console.post_event(release_failure(at=clock.now()))
    assert posted.status_code == 202, posted.text
    await console.settle()
    capture = console.services.capture
    assert capture is not None
    message = capture.handler.messages()[0]

    # When QA opens it from the console's mailbox on a phone
    tab = await open_tab(browser, console, PHONE)
    page = tab.page
    await sign_in(tab, people.qa)
    await visit(page, f"/console/mailbox/{message.number}", message.subject[:20])

    # Then its frame is as tall as the email, as the preview's is: the closing line lies inside
    await assert_email_fits(page)
    tab.check()
    await tab.context.close()
