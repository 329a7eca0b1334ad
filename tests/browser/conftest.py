"""Browser fixtures: Debian's Chromium driven by Playwright's async API, against the real service
on a loopback port.

One browser per module, and every test of a browser module runs on that module's event loop
(``pytestmark``), as does the service it starts: Playwright's async API lives on the loop that
started it. Its sync API is not used: while open it leaves a loop marked running on the main
thread, and every pytest-asyncio test after it fails.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    async_playwright,
    expect,
)

from oos_notify.clock import ManualClock
from oos_notify.settings import Settings
from tests.conftest import RunningService, start_service

CHROMIUM = os.environ.get("OOS_NOTIFY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDE = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe-core-4.14.1" / "axe.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
BLOCKING = ("serious", "critical")
EXPECTED_WAIT = 10_000
"""Milliseconds a test waits for a page to show something (a live refresh comes every 2 s)."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def console(settings: Settings, clock: ManualClock) -> AsyncIterator[RunningService]:
    """The service, on the module's loop (the ``service`` fixture runs on the test's own)."""
    running = await start_service(settings, clock)
    try:
        yield running
    finally:
        await running.stop()


class Tab:
    """A browser tab on the service, failing its test on any error the page logs."""

    def __init__(self, context: BrowserContext, page: Page, allowed: tuple[str, ...]) -> None:
        self.context = context
        self.page = page
        self.errors: list[str] = []
        self._allowed = allowed
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _console(self, message: ConsoleMessage) -> None:
        # Chromium logs every 4xx answer as an error; a test names the refusals it expects.
        if message.type == "error" and not any(a in message.text for a in self._allowed):
            self.errors.append(message.text)

    def check(self) -> None:
        assert not self.errors, f"the page logged errors: {self.errors}"


async def open_tab(
    browser: Browser,
    service: RunningService,
    viewport: dict[str, int] = WIDE,
    allowed: tuple[str, ...] = (),
) -> Tab:
    context = await browser.new_context(
        base_url=str(service.client.base_url),
        viewport=viewport,  # type: ignore[arg-type]
        timezone_id="America/New_York",
        locale="en-US",
        accept_downloads=True,
    )
    context.set_default_timeout(EXPECTED_WAIT)
    return Tab(context, await context.new_page(), allowed)


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Every violation axe-core finds on the page as it is now (of any impact)."""
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        # evaluate() is not subject to the page's CSP, which would refuse an injected script
        await page.evaluate(AXE.read_text(encoding="utf-8"))
    result = await page.evaluate(
        """(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags},
                                        resultTypes: ['violations']})""",
        AXE_TAGS,
    )
    violations: list[dict[str, Any]] = result["violations"]
    return violations


def blocking(violations: list[dict[str, Any]]) -> list[str]:
    return [
        f"{v['impact']}: {v['id']}: {v['help']} at {[n['target'] for n in v['nodes']][:5]}"
        for v in violations
        if v["impact"] in BLOCKING
    ]


async def assert_email_fits(page: Page) -> None:
    """The email's frame on ``page`` is as tall as the email: its closing line lies inside the
    frame, unscrolled."""
    frame = page.locator("iframe.email")
    closing = frame.content_frame.get_by_text("Keep it within the care team and do not forward it.")
    await expect(closing).to_be_attached()
    fits = await frame.evaluate(
        """(el) => {
            const doc = el.contentDocument.documentElement;
            const last = [...el.contentDocument.querySelectorAll('p')].pop();
            return {frame: el.clientHeight, content: doc.scrollHeight,
                    bottom: last.getBoundingClientRect().bottom};
        }"""
    )
    assert fits["frame"] >= fits["content"] and fits["bottom"] <= fits["frame"], fits
