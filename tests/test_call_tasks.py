"""Phone calls an agreement requires, and severity that follows the clock, over real HTTP and
real SMTP with the controllable clock: a critical late result in the night opening a call task,
its close refused without whom the caller reached, its escalation at the deadline; an incident
crossing the 72-hour threshold at its own instant with no event posted; a severity rise moving a
decision deadline kept in business hours."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.settings import Settings
from tests.conftest import CONFIG_DIR, RunningService, command_env, release_failure, start_service
from tests.console.conftest import add_people, browser, csrf_token, sign_in
from tests.test_check_config import OOS_NOTIFY, edit
from tests.test_clinical import late_sterility, mail_to, plain
from tests.test_lifecycle import (
    ACCOUNT_LEAD,
    MEDICAL_AFFAIRS,
    PHYSICIAN,
    advance,
    detail,
    follow_up,
    post,
    sent_to,
    timeline,
)

QA_DESK = "qa-release@manufacturer.example"
CALL_RULE = (
    "calls:\n"
    '  - {name: critical incident, severity: [critical], call: "manufacturer:medical_affairs", '
    'escalate: ["manufacturer:qa"]}\n'
)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The example config, with a call rule for critical incidents on both plans, and the
    standard plan's decision due 8 business hours after the offer."""
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    for plan in ("standard", "urgent"):
        path = config / "plans" / f"{plan}.yaml"
        path.write_text(path.read_text() + CALL_RULE)
    edit(
        config / "plans" / "standard.yaml",
        "due: {before: lymphodepletion_start, by: 72h}",
        "due: {after: 8h, business_hours: true}",
    )
    return config


@pytest.fixture
async def calling(
    settings: Settings, clock: ManualClock, config: Path
) -> AsyncIterator[RunningService]:
    running = await start_service(settings.model_copy(update={"config_dir": config}), clock)
    try:
        yield running
    finally:
        await running.stop()


async def open_tasks(service: RunningService) -> list[dict[str, Any]]:
    response = await service.client.get(
        "/v1/call-tasks", params={"status": "open"}, headers=service.auth
    )
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = response.json()
    return tasks


def call_record(at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "reached_name": "Dr. Lena Ortiz",
        "reached_number": "+1 312 555 0144",
        "reached_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "outcome": "Physician informed; patient to be assessed tonight, blood cultures drawn.",
        "closed_by": "Medical Affairs On Call",
        **fields,
    }


# --- call tasks ------------------------------------------------------------------------------


async def test_a_critical_late_result_at_3_am_opens_a_call_task_that_escalates_at_its_deadline(
    calling: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given 03:00 on Wednesday in Chicago
    clock.advance(datetime(2026, 11, 25, 9, 0, tzinfo=UTC) - clock.now())

    # When a sterility culture grows after infusion
    opened = await post(
        calling,
        late_sterility(
            500,
            at=clock.now() - timedelta(minutes=1),
            product_status="infused",
            infused_at="2026-11-24T18:00:00Z",
        ),
    )

    # Then medical affairs is told at once to call, with the numbers, due within the promise
    [task] = await open_tasks(calling)
    assert (task["incident_id"], task["caller_role"]) == (
        opened["incident_id"],
        "manufacturer:medical_affairs",
    )
    assert task["reason"] == "the incident is critical"
    assert task["due_at"] == "2026-11-25T10:00:00Z"  # critical: notify_within 1h
    assert [n["phone"] for n in task["numbers"]] == [
        "+1 312 555 0100",
        "+1 312 555 0144",
        "+1 312 555 0142",
    ]
    calls = [m for m in smtp.handler.messages() if m.subject.startswith("Call the center now: ")]
    assert sent_to(calls) == {MEDICAL_AFFAIRS: 1}
    assert calls[0].subject == "Call the center now: OOS-2026-0142, lot LOT-24-1187"
    text = plain(calls[0])
    assert "CALL Mercy General — Main Campus BY Wed 25 Nov 2026, 04:00 CST" in text
    assert "This incident needs a phone call as well as email: the incident is critical." in text
    assert "- Dr. Lena Ortiz, CAR-T attending (physician): +1 312 555 0144" in text
    assert f"POST /v1/call-tasks/{task['id']}/close" in text

    # When the caller tries to close it without saying whom they reached, it is refused
    missing = call_record(clock.now())
    del missing["reached_name"]
    refused = await calling.client.post(
        f"/v1/call-tasks/{task['id']}/close", json=missing, headers=calling.auth
    )
    assert refused.status_code == 422
    assert [e["loc"] for e in refused.json()["detail"]] == [["body", "reached_name"]]
    assert [t["id"] for t in await open_tasks(calling)] == [task["id"]]

    # Then nothing more until the deadline; at 04:00 the next role hears the call was not made
    before = len(smtp.handler.messages())
    await advance(calling, clock, minutes=59, seconds=59)
    assert not [m for m in smtp.handler.messages()[before:] if m.recipients[0] == QA_DESK]
    await advance(calling, clock, seconds=1)
    overdue = [m for m in smtp.handler.messages()[before:] if m.recipients[0] == QA_DESK]
    assert [m.subject for m in overdue] == [
        "Call not made: OOS-2026-0142, lot LOT-24-1187, center unreached"
    ]
    assert (
        "was due by Wed 25 Nov 2026, 04:00 CST and nobody has recorded it: "
        "manufacturer:medical_affairs was asked at Wed 25 Nov 2026, 03:00 CST" in plain(overdue[0])
    )
    [escalated] = await open_tasks(calling)
    assert (escalated["overdue"], escalated["escalated_at"]) == (True, "2026-11-25T10:00:00Z")

    # When the call is recorded, the task closes with whom, where, when and what came of it
    clock.advance(timedelta(minutes=5))
    closed = await calling.client.post(
        f"/v1/call-tasks/{task['id']}/close",
        json=call_record(clock.now() - timedelta(minutes=2)),
        headers=calling.auth,
    )
    assert closed.status_code == 200, closed.text
    body = closed.json()
    assert (body["status"], body["reached_name"], body["reached_number"], body["reached_at"]) == (
        "closed",
        "Dr. Lena Ortiz",
        "+1 312 555 0144",
        "2026-11-25T10:03:00Z",
    )
    assert await open_tasks(calling) == []
    again = await calling.client.post(
        f"/v1/call-tasks/{task['id']}/close", json=call_record(clock.now()), headers=calling.auth
    )
    assert again.status_code == 409
    actions = [e["action"] for e in await timeline(calling, opened["incident_id"])]
    assert [a for a in actions if a.startswith("call_task_")] == [
        "call_task_opened",
        "call_task_escalated",
        "call_task_closed",
    ]


async def test_a_call_recorded_in_time_calls_off_its_escalation(
    calling: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    await post(calling, late_sterility(501, at=clock.now() - timedelta(minutes=1)))
    [task] = await open_tasks(calling)

    clock.advance(timedelta(minutes=20))
    future = call_record(clock.now() + timedelta(minutes=5))
    refused = await calling.client.post(
        f"/v1/call-tasks/{task['id']}/close", json=future, headers=calling.auth
    )
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "reached_at"]
    closed = await calling.client.post(
        f"/v1/call-tasks/{task['id']}/close", json=call_record(clock.now()), headers=calling.auth
    )
    assert closed.status_code == 200, closed.text

    await advance(calling, clock, hours=2)
    assert QA_DESK not in sent_to(smtp.handler.messages())


# --- severity that follows the clock ---------------------------------------------------------


async def test_an_incident_crossing_the_72_hour_threshold_becomes_critical_at_that_instant(
    calling: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given a major incident opened Tuesday 16:12 in Chicago, lymphodepletion on Saturday: the
    # reminder waits for Wednesday 09:12, two business hours later
    clock.advance(timedelta(hours=7))
    opened = await post(
        calling,
        release_failure(
            at=clock.now() - timedelta(minutes=2),
            key_dates={"lymphodepletion_start": "2026-11-28", "planned_infusion": "2026-12-01"},
        ),
    )
    incident_id = opened["incident_id"]
    state = await detail(calling, incident_id)
    assert state["severity"] == "major"
    [reminder] = {
        n["due_at"] for n in state["notifications"] if n["template"] == "escalation_reminder"
    }
    assert reminder == "2026-11-25T15:12:00Z"
    sent = len(smtp.handler.messages())

    # When the clock reaches Wednesday 00:00, 72 hours before lymphodepletion, with no event
    threshold = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
    await advance(calling, clock, seconds=(threshold - clock.now()).total_seconds() - 1)
    assert len(smtp.handler.messages()) == sent
    assert (await detail(calling, incident_id))["severity"] == "major"
    await advance(calling, clock, seconds=1)

    # Then the incident is critical by the agreement's rule, audited as the clock's doing
    state = await detail(calling, incident_id)
    assert (state["severity"], state["severity_rule"]) == (
        "critical",
        "lymphodepletion starts within 72 hours",
    )
    [changed] = [
        e for e in await timeline(calling, incident_id) if e["action"] == "severity_changed"
    ]
    assert changed["actor"] == "clock"
    assert changed["at"] == "2026-11-25T06:00:00Z"
    assert (changed["detail"]["severity_from"], changed["detail"]["severity_to"]) == (
        "major",
        "critical",
    )

    # And its unsent steps ran on the faster clock: the reminder and the final step went out
    # now instead of Wednesday 09:12 and 11:12, and the critical rule's call task opened
    tonight = smtp.handler.messages()[sent:]
    reminders = [m for m in tonight if m.subject.startswith("Confirm now: ")]
    assert sent_to(reminders) == {"ct-coord2@mercy.example": 1, PHYSICIAN: 1}
    assert ACCOUNT_LEAD in sent_to(tonight)
    sent_at = {
        n["template"]: n["sent_at"]
        for n in (await detail(calling, incident_id))["notifications"]
        if n["status"] == "sent" and n["template"].startswith("escalation_")
    }
    assert sent_at == {
        "escalation_reminder": "2026-11-25T06:00:00Z",
        "escalation_final": "2026-11-25T06:00:00Z",
    }
    [task] = await open_tasks(calling)
    assert (task["incident_id"], task["opened_at"]) == (incident_id, "2026-11-25T06:00:00Z")
    assert MEDICAL_AFFAIRS in sent_to(tonight)


async def test_a_severity_rise_moves_a_decision_deadline_kept_in_business_hours(
    calling: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given a product offered Tuesday 15:00 in Chicago, its decision due 8 business hours
    # later: Wednesday 14:00
    opened = await post(calling, release_failure())
    clock.advance(datetime(2026, 11, 24, 21, 0, tzinfo=UTC) - clock.now())
    await post(
        calling,
        follow_up(
            "disposition",
            600,
            occurred_at="2026-11-24T20:59:00Z",
            disposition="oos_release_offered",
        ),
    )

    def deadlines(state: dict[str, Any], status: str) -> set[str]:
        return {
            n["due_at"]
            for n in state["notifications"]
            if n["kind"] == "decision_overdue" and n["status"] == status
        }

    state = await detail(calling, opened["incident_id"])
    assert deadlines(state, "scheduled") == {"2026-11-25T20:00:00Z"}

    # When QA raises the incident to critical at 16:00
    clock.advance(timedelta(hours=1))
    await post(
        calling,
        follow_up("update", 601, occurred_at="2026-11-24T21:59:00Z", severity="critical"),
    )

    # Then the deadline counts every hour from the offer: Tuesday 23:00, not Wednesday 14:00
    state = await detail(calling, opened["incident_id"])
    assert state["severity"] == "critical"
    assert deadlines(state, "scheduled") == {"2026-11-25T05:00:00Z"}
    assert deadlines(state, "cancelled") == {"2026-11-25T20:00:00Z"}

    # And the physician is asked again at 23:00 that night
    before = len(smtp.handler.messages())
    await advance(calling, clock, hours=7)
    overdue = [
        m for m in smtp.handler.messages()[before:] if m.subject.startswith("Decision overdue: ")
    ]
    assert PHYSICIAN in sent_to(overdue)
    assert "by Tue 24 Nov 2026, 23:00 CST" in plain(mail_to(overdue, PHYSICIAN))


# --- the agreement ---------------------------------------------------------------------------


def test_check_config_refuses_a_call_rule_naming_a_role_nobody_holds(tmp_path: Path) -> None:
    shutil.copytree(CONFIG_DIR, tmp_path / "config")
    shutil.copytree(CONFIG_DIR.parent / "templates", tmp_path / "templates")
    urgent = tmp_path / "config" / "plans" / "urgent.yaml"
    urgent.write_text(urgent.read_text() + CALL_RULE.replace("medical_affairs", "supply_chain"))

    result = subprocess.run(
        [OOS_NOTIFY, "check-config"],
        cwd=tmp_path,
        env=command_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert (
        "config/health_systems/mercy-health.yaml: sites[0].plans.late_result: plan 'urgent' "
        "call rule 'critical incident' names manufacturer:supply_chain but nobody in the "
        "manufacturer's contacts has that role" in result.stderr
    )


# --- the console -----------------------------------------------------------------------------


async def test_the_board_shows_open_call_tasks_first_and_closes_one_with_its_form(
    calling: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given a critical late result that opened a call task, and a major incident without one
    await post(calling, release_failure(event_id="E-MAJOR", incident_ref="OOS-MAJOR"))
    await post(calling, late_sterility(700, at=clock.now() - timedelta(minutes=1)))
    [task] = await open_tasks(calling)
    people = add_people(calling)

    async with browser(calling) as client:
        await sign_in(client, people.qa)
        board = await client.get("/console")

        # Then the call comes first on the board, with its numbers and a form to record it
        text = board.text
        assert text.index("Calls to make (1)") < text.index("Open incidents")
        assert text.index(f'id="call-{task["id"]}"') < text.index("OOS-MAJOR")
        assert 'href="tel:+13125550144"' in text

        # When the form is sent without whom the caller reached, nothing is recorded
        form = {
            "csrf_token": csrf_token(board),
            "reached_number": "+1 312 555 0144",
            "reached_at": "2026-11-24T09:20",
            "outcome": "Physician informed.",
        }
        action = f"/console/call-tasks/{task['id']}/close"
        refused = await client.post(action, data=form)
        assert refused.status_code == 422
        assert "Call not recorded" in refused.text and "reached name" in refused.text
        assert [t["id"] for t in await open_tasks(calling)] == [task["id"]]

        # When it is complete, the task closes in the caller's name, at the center's time
        clock.advance(timedelta(minutes=10))
        done = await client.post(action, data={**form, "reached_name": "Dr. Lena Ortiz"})
        assert done.status_code == 303
        assert "Calls to make" not in (await client.get("/console")).text
    [closed] = [
        t
        for t in (await calling.client.get("/v1/call-tasks", headers=calling.auth)).json()
        if t["id"] == task["id"]
    ]
    assert (closed["status"], closed["closed_by"], closed["reached_at"]) == (
        "closed",
        people.qa,
        "2026-11-24T15:20:00Z",
    )
