"""The board puts first what comes due soonest: lymphodepletion and infusion dates (with how far
they are at the center), open call tasks, running reports to authorities."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlmodel import select

from oos_notify.clock import ManualClock
from oos_notify.incidents import call_tasks
from oos_notify.store.db import transaction
from oos_notify.store.models import Incident
from oos_notify.web.console.fmt import days_until
from tests.conftest import START, RunningService, release_failure
from tests.console.conftest import People, browser, sign_in


def dates(days_to_lymphodepletion: int) -> dict[str, str]:
    day = START.date()
    return {
        "lymphodepletion_start": (day + timedelta(days=days_to_lymphodepletion)).isoformat(),
        "planned_infusion": (day + timedelta(days=days_to_lymphodepletion + 3)).isoformat(),
    }


def test_days_are_counted_at_the_center() -> None:
    # 03:00 UTC on the 25th is still the evening of the 24th in Chicago, and morning in Bonn
    now = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
    assert days_until(date(2026, 11, 25), now, "America/Chicago") == "tomorrow"
    assert days_until(date(2026, 11, 25), now, "Europe/Berlin") == "today"
    assert days_until(date(2026, 11, 27), now, "America/Chicago") == "in 3 days"
    assert days_until(date(2026, 11, 23), now, "America/Chicago") == "yesterday"
    assert days_until(date(2026, 11, 20), now, "Europe/Berlin") == "5 days ago"


async def test_the_nearest_lymphodepletion_comes_first_with_its_countdown(
    service: RunningService, people: People
) -> None:
    # The critical incident is opened first, but its patient is twelve days from lymphodepletion
    await service.post_event(
        release_failure(
            event_id="E-LATER", incident_ref="OOS-LATER", severity="critical", key_dates=dates(12)
        )
    )
    await service.post_event(
        release_failure(event_id="E-SOON", incident_ref="OOS-SOON", key_dates=dates(2))
    )
    await service.settle()
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        board = (await client.get("/console")).text
        rows = (await client.get("/console/board/rows")).text
    for shown in (board, rows):
        assert shown.index("OOS-SOON") < shown.index("OOS-LATER")
    soon = board[board.index("OOS-SOON") : board.index("OOS-LATER")]
    # START is Tuesday 24 November at the center: lymphodepletion in 2 days, infusion in 5
    assert 'Lymphodepletion start: <span class="nowrap">Thu 26 Nov 2026</span>' in soon
    assert "in 2 days" in soon and "Planned infusion" in soon and "in 5 days" in soon
    assert "soonest due first" in board


async def test_an_open_call_task_due_first_puts_its_incident_first(
    service: RunningService, people: People, clock: ManualClock
) -> None:
    await service.post_event(
        release_failure(event_id="E-DATES", incident_ref="OOS-DATES", key_dates=dates(1))
    )
    await service.post_event(
        release_failure(event_id="E-CALL", incident_ref="OOS-CALL", key_dates=dates(20))
    )
    await service.settle()
    with transaction(service.services.engine) as session:
        incident = session.exec(select(Incident).where(Incident.incident_ref == "OOS-CALL")).one()
        call_tasks.open_call_task(
            session,
            incident,
            clock.now(),
            service.services.settings.mail_domain,
            reason="the center asked to be called",
            due_at=clock.now() + timedelta(hours=1),
        )
    async with browser(service) as client:
        await sign_in(client, people.qa)
        board = (await client.get("/console/board/rows")).text
    # Due in an hour comes before a lymphodepletion tomorrow
    assert board.index("OOS-CALL") < board.index("OOS-DATES")
    call_row = board[board.index("OOS-CALL") : board.index("OOS-DATES")]
    assert "the center asked to be called" in call_row and "due in 1 h 00 min" in call_row

    clock.advance(timedelta(hours=2))
    async with browser(service) as client:
        await sign_in(client, people.qa)
        later = (await client.get("/console/board/rows")).text
    assert later.index("OOS-CALL") < later.index("OOS-DATES")
    assert "overdue" in later[later.index("OOS-CALL") : later.index("OOS-DATES")]
