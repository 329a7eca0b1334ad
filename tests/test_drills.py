"""Drills, end to end over real HTTP and real SMTP on the controllable clock: the center's real
contacts, DRILL in every subject and first line, no patient liaison, a report of how the center
did against each promise of its agreement, and nothing of it in the real reports."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CapturedMessage, CaptureServer
from oos_notify.delivery.rendering import DRILL_LINE
from tests.conftest import RunningService, ack_link, received, release_failure
from tests.console.conftest import add_people, browser, sign_in

LIAISONS = {"navigator@mercy.example", "patient-services@manufacturer.example"}


def _marked(message: CapturedMessage) -> None:
    """What every message of a drill shows before anything else."""
    assert message.subject.startswith("DRILL "), message.subject
    assert len(message.subject) <= 78, message.subject
    assert message.part("plain").splitlines()[0] == DRILL_LINE
    html = message.part("html")
    body = html[html.index("<body") :]
    assert body.index(DRILL_LINE) < body.index("<div"), "the DRILL line leads the HTML body"


async def test_a_drill_runs_with_real_contacts_marked_and_reports_against_the_agreement(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    people = add_people(service)
    # Given a real incident and a drill at the same center, opened together
    real = await service.post_event(release_failure(at=clock.now()))
    assert real.status_code == 202, real.text
    drill_event = release_failure(
        at=clock.now(), event_id="QA-DRILL-1", incident_ref="DRILL-2026-01", drill=True
    )
    answer = await service.post_event(drill_event)
    assert answer.status_code == 202, answer.text
    drill_id = answer.json()["incident_id"]

    # Then the drill plans nothing for patient liaisons, and the trail says why
    assert not LIAISONS & {s["recipient"] for s in answer.json()["scheduled"]}
    timeline = (
        await service.client.get(f"/v1/incidents/{drill_id}/timeline", headers=service.auth)
    ).json()
    skipped = [e for e in timeline if e["action"] == "step_skipped"]
    assert skipped and all(
        e["detail"]["reason"] == "a drill reaches no patient liaison" for e in skipped
    )

    # And its first notices reach the center's real contacts, marked DRILL
    first = await received(smtp, 6)
    await service.settle()
    drill_mail = [m for m in first if "DRILL-2026-01" in m.subject]
    assert sorted(m.recipients[0] for m in drill_mail) == [
        "celllab@mercy.example",
        "ct-coord@mercy.example",
        "ct-md@mercy.example",
    ]
    for message in drill_mail:
        _marked(message)
    assert not any(m.subject.startswith("DRILL") for m in first if m not in drill_mail)

    # When nobody confirms for two business hours, the reminder goes out, marked too
    clock.advance(timedelta(hours=2, minutes=5))
    await service.settle()
    reminders = [m for m in smtp.handler.messages()[6:] if "DRILL-2026-01" in m.subject]
    assert {m.recipients[0] for m in reminders} == {
        "ct-coord2@mercy.example",
        "ct-md@mercy.example",
    }
    for message in reminders:
        _marked(message)

    # And then the coordinator confirms from the link: QA's receipt is a drill's, no liaison
    coordinator = next(m for m in drill_mail if m.recipients == ("ct-coord@mercy.example",))
    clock.advance(timedelta(minutes=10))
    confirmed = await service.client.post(ack_link(coordinator), data={"response": "received"})
    assert confirmed.status_code == 200
    await service.settle()
    after = [m for m in smtp.handler.messages()[6:] if "DRILL-2026-01" in m.subject]
    [receipt] = [m for m in after if m.recipients == ("qa@manufacturer.example",)]
    _marked(receipt)
    assert not LIAISONS & {m.recipients[0] for m in after}

    # Then the drill's report shows each promise of the agreement and how it went
    report = await service.client.get(
        f"/v1/incidents/{drill_id}/drill-report", headers=service.auth
    )
    assert report.status_code == 200, report.text
    body = report.json()
    outcomes = {p["promise"]: (p["outcome"], p["detail"]) for p in body["promises"]}
    assert outcomes["First notice delivered within 4h (major)"] == (
        "kept",
        "delivered 0 min after the opening",
    )
    step_one = (
        "Confirmed by the cell therapy coordinator or backup coordinator or treating physician "
        "before escalation step 1 (after 2h)"
    )
    assert outcomes[step_one][0] == "missed"
    step_two = step_one.replace("step 1 (after 2h)", "step 2 (after 4h)")
    assert outcomes[step_two] == (
        "kept",
        "confirmed 2 h 15 min after the opening; step 2 was not needed",
    )
    assert outcomes["No patient liaison reached in a drill"] == ("kept", "none was told")
    assert body["minutes_to_confirm"] == 135.0 and body["kept"] == 3
    # A real incident has no drill report
    real_report = await service.client.get(
        f"/v1/incidents/{real.json()['incident_id']}/drill-report", headers=service.auth
    )
    assert real_report.status_code == 409

    # And the real reports count the real incident only; the drill has its own section
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        page = await client.get("/console/reports?months=3")
        confirming = await client.get("/console/reports/time-to-confirm.csv?months=3")
        promises = await client.get("/console/reports/notify-within.csv?months=3")
        board = await client.get("/console")
    rows = list(csv.reader(io.StringIO(confirming.text)))
    assert rows[1][:4] == ["mercy-general-main", "Mercy General — Main Campus", "1", "0"]
    assert (
        sum(
            int(row[1]) + int(row[2]) + int(row[3])
            for row in list(csv.reader(io.StringIO(promises.text)))[1:]
        )
        == 1
    )
    assert "DRILL-2026-01</a>, mercy-general-main: 3 of 4 promises kept" in page.text
    assert "DRILL</strong>" in board.text


async def test_only_the_opening_event_makes_a_drill(service: RunningService) -> None:
    opened = await service.post_event(release_failure())
    assert opened.status_code == 202
    again = await service.post_event(release_failure())
    assert again.status_code == 200 and again.json()["duplicate"] is True
    listed = await service.client.get("/v1/incidents", headers=service.auth)
    assert listed.json()["items"][0]["drill"] is False
    late = release_failure(event_id="QA-EVT-2", type="update", drill=True)
    refused = await service.post_event(late)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "drill"]
    assert "this incident is real" in refused.json()["detail"][0]["msg"]
