"""Reports: time to confirm per center (median, nearest-rank 90th percentile), the share of
notify-within promises met per month, and the CSV the charts are drawn from."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.web.console import reports
from tests.conftest import RunningService, ack_link, received, release_failure
from tests.console.conftest import People, browser, sign_in


def test_the_90th_percentile_is_a_time_that_was_observed() -> None:
    assert reports.nearest_rank([5, 1, 3, 2, 4, 6, 7, 8, 9, 10], 90) == 9
    assert reports.nearest_rank([42], 90) == 42
    assert reports.nearest_rank([1, 2, 3], 90) == 3


def test_a_window_of_months_ends_now_and_starts_on_a_first() -> None:
    now = datetime(2026, 2, 14, 10, 0, tzinfo=UTC)
    assert reports.months_back(now, 3) == datetime(2025, 12, 1, tzinfo=UTC)


def test_a_csv_cell_is_never_a_spreadsheet_formula() -> None:
    text = reports.csv_text(["center"], [['=HYPERLINK("x")'], ["+1"], ["Mercy"]])
    assert list(csv.reader(io.StringIO(text))) == [
        ["center"],
        ['\'=HYPERLINK("x")'],
        ["'+1"],
        ["Mercy"],
    ]


async def test_reports_count_confirmations_and_promises_from_the_incidents(
    service: RunningService, smtp: CaptureServer, people: People, clock: ManualClock
) -> None:
    # Two incidents at Mercy General: one confirmed after 30 min, one sent 5 h late and
    # confirmed 6 h after opening (a breach of its 4 h promise)
    for number, (send_after, confirm_after) in enumerate([(0, 30), (300, 60)]):
        event = release_failure(
            at=clock.now(), event_id=f"QA-EVT-{number}", incident_ref=f"OOS-2026-{number:04d}"
        )
        await service.post_event(event)
        clock.advance(timedelta(minutes=send_after))
        await service.settle()
        messages = await received(smtp, 3 * (number + 1) + number)
        notice = next(m for m in messages[::-1] if m.recipients[0] == "ct-coord@mercy.example")
        clock.advance(timedelta(minutes=confirm_after))
        await service.client.post(ack_link(notice), data={"response": "received"})
        await service.settle()
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        page = await client.get("/console/reports?months=3")
        confirming = await client.get("/console/reports/time-to-confirm.csv?months=3")
        promises = await client.get("/console/reports/notify-within.csv?months=3")
    assert page.status_code == 200 and "<svg" in page.text
    assert 'role="img"' in page.text
    # The page writes the month as the console writes dates; the CSV keeps ISO for machines
    assert '<th scope="row" class="nowrap">Nov 2026</th>' in page.text
    assert "per month: Nov 2026 50%" in page.text and "2026-11" not in page.text
    assert list(csv.reader(io.StringIO(confirming.text))) == [
        ["center_id", "center", "incidents", "confirmed", "median_minutes", "p90_minutes"],
        ["mercy-general-main", "Mercy General — Main Campus", "2", "2", "195.0", "360.0"],
    ]
    assert list(csv.reader(io.StringIO(promises.text)))[-1] == ["2026-11", "1", "1", "0", "50.0"]
    assert 'filename="notify-within.csv"' in promises.headers["content-disposition"]


async def test_the_time_to_confirm_waits_for_a_confirmation_that_stops_the_escalation(
    service: RunningService, smtp: CaptureServer, people: People, clock: ManualClock
) -> None:
    await service.post_event(release_failure(at=clock.now()))
    await service.settle()
    first = await received(smtp, 3)

    def link(recipient: str) -> str:
        return ack_link(next(m for m in first if m.recipients[0] == recipient))

    # The cell lab confirms after 10 min (it stops nothing), the coordinator after 40
    clock.advance(timedelta(minutes=10))
    await service.client.post(link("celllab@mercy.example"), data={"response": "received"})
    clock.advance(timedelta(minutes=30))
    await service.client.post(link("ct-coord@mercy.example"), data={"response": "received"})
    await service.settle()
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        confirming = await client.get("/console/reports/time-to-confirm.csv?months=3")
    assert list(csv.reader(io.StringIO(confirming.text)))[1] == [
        "mercy-general-main",
        "Mercy General — Main Campus",
        "1",
        "1",
        "40.0",
        "40.0",
    ]
