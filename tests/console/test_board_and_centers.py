"""The board's order and filters, and a center's page computed by the service's own planner."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from oos_notify.agreements.config import load_agreements
from oos_notify.agreements.vocabulary import EventType, KeyDate, Severity
from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer, free_port
from oos_notify.incidents.planning import IncidentFacts, plan_opening
from oos_notify.web.console import centers
from tests.conftest import (
    CONFIG_DIR,
    START,
    RunningService,
    ack_link,
    release_failure,
    service_settings,
    start_service,
)
from tests.console.conftest import People, add_people, browser, sign_in


async def test_the_board_puts_the_critical_unconfirmed_first_and_filters(
    tmp_path: Path, smtp: CaptureServer, clock: ManualClock
) -> None:
    # The mail server is unreachable (its port closed): no first notice is delivered, whenever
    # the dispatcher runs. Left reachable, it delivered them before or after the clock moved, as
    # the machine's load had it, and the promise read met or breached.
    settings = service_settings(tmp_path, smtp, smtp_port=free_port())
    service = await start_service(settings, clock)
    try:
        people = add_people(service)
        await service.post_event(release_failure(event_id="E-1", incident_ref="OOS-MAJOR"))
        await service.post_event(
            release_failure(event_id="E-2", incident_ref="OOS-CRITICAL", severity="critical")
        )
        await service.post_event(
            release_failure(
                event_id="E-3", incident_ref="OOS-BONN", center_id="rhein-uk-bonn", severity="minor"
            )
        )
        clock.advance(timedelta(hours=1, minutes=5))  # the critical one's 1 h is over
        async with browser(service) as client:
            await sign_in(client, people.viewer)
            board = (await client.get("/console")).text
            breached = (await client.get("/console/board/rows?breached=1")).text
            bonn = (await client.get("/console/board/rows?center=rhein-uk-bonn")).text
            unknown = await client.get("/console?status=lost")
    finally:
        await service.stop()
    assert board.index("OOS-CRITICAL") < board.index("OOS-MAJOR") < board.index("OOS-BONN")
    assert "breached by 5 min" in board
    assert "OOS-CRITICAL" in breached and "OOS-MAJOR" not in breached
    assert "OOS-BONN" in bonn and "OOS-MAJOR" not in bonn
    assert unknown.status_code == 422 and "status: &#39;lost&#39; is not one of" in unknown.text


async def test_a_cell_lab_confirmation_leaves_the_incident_waiting_on_the_board(
    service: RunningService, people: People, smtp: CaptureServer, clock: ManualClock
) -> None:
    await service.post_event(release_failure(event_id="E-LAB", incident_ref="OOS-LAB"))
    await service.post_event(release_failure(event_id="E-COORD", incident_ref="OOS-COORD"))
    await service.settle()
    first = {(m.recipients[0], m.subject): m for m in smtp.handler.messages()}

    def link(recipient: str, ref: str) -> str:
        [mail] = [m for (to, subject), m in first.items() if to == recipient and ref in subject]
        return ack_link(mail)

    clock.advance(timedelta(minutes=20))
    lab = link("celllab@mercy.example", "OOS-LAB")
    await service.client.post(lab, data={"response": "received"})
    coordinator = link("ct-coord@mercy.example", "OOS-COORD")
    await service.client.post(coordinator, data={"response": "received"})
    await service.settle()

    async with browser(service) as client:
        await sign_in(client, people.viewer)
        board = (await client.get("/console")).text
    # The cell lab's confirmation stopped nothing: that incident still waits on the center,
    # so it comes first and shows nobody as having confirmed it.
    assert board.index("OOS-LAB") < board.index("OOS-COORD")
    lab_row = board[board.index("OOS-LAB") : board.index("OOS-COORD")]
    assert "celllab@mercy.example" not in lab_row and "not yet" in lab_row
    assert "ct-coord@mercy.example" in board[board.index("OOS-COORD") :]


async def test_a_live_refresh_answers_304_until_something_changes(
    service: RunningService, people: People
) -> None:
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        first = await client.get("/console/board/rows")
        etag = first.headers["etag"]
        again = await client.get("/console/board/rows", headers={"If-None-Match": etag})
        assert again.status_code == 304
        await service.post_event(release_failure())
        changed = await client.get("/console/board/rows", headers={"If-None-Match": etag})
        assert changed.status_code == 200 and "OOS-2026-0142" in changed.text


def test_what_an_incident_opened_now_would_send_is_what_the_planner_plans() -> None:
    agreement = load_agreements(CONFIG_DIR).effective("mercy-general-main")
    key_dates = {KeyDate.LYMPHODEPLETION_START: date(2026, 11, 30)}
    shown = centers.what_if(agreement, EventType.RELEASE_FAILURE, Severity.MAJOR, key_dates, START)
    planned = plan_opening(
        agreement, IncidentFacts(EventType.RELEASE_FAILURE, Severity.MAJOR, key_dates), START
    )
    assert sorted((f.due_at, n) for f in shown.fired for _, n in f.recipients) == sorted(
        (p.due_at, p.recipient_name) for p in planned.notifications
    )
    assert shown.deadline == START + timedelta(hours=4)
    first, *_ = shown.fired
    assert first.step == "first notice" and first.due_at == START


def test_the_next_days_off_are_the_centers_public_holidays_and_closures() -> None:
    agreement = load_agreements(CONFIG_DIR).effective("mercy-general-main")
    days = centers.days_off(agreement, date(2026, 11, 24), limit=2)
    assert [(d.day, d.name) for d in days] == [
        (date(2026, 11, 26), "Thanksgiving Day"),
        (date(2026, 12, 25), "Christmas Day"),
    ]


async def test_the_center_page_shows_steps_in_the_centers_time(
    service: RunningService, people: People
) -> None:
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        page = await client.get("/console/centers/mercy-general-main?severity=major")
        missing = await client.get("/console/centers/nowhere")
    assert page.status_code == 200
    assert "Thanksgiving Day" in page.text
    assert "Tue 24 Nov 2026, 11:12 CST" in page.text  # the 2 h reminder, in business hours
    assert 'datetime="2026-11-24T17:12:00Z" data-viewer-time' in page.text
    assert missing.status_code == 404


async def test_a_key_date_out_of_range_is_refused_naming_it(
    service: RunningService, people: People
) -> None:
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        page = await client.get(
            "/console/centers/mercy-general-main?lymphodepletion_start=0001-01-02"
        )
    assert page.status_code == 422
    assert page.json()["detail"][0]["loc"] == ["query", "lymphodepletion_start"]
