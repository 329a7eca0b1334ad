"""A message that cannot be built fails alone: the rest of its batch goes out, it is failed with
its reason for all to see, QA is told, and the escalation goes on.

The API and the agreement loader refuse most of what makes a message unbuildable (a line break
in a name, an address that is not ASCII), so these tests put the bad value straight into the
database: the dispatcher must hold up whatever reaches it, however it got there.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session, col, select

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CapturedMessage, CaptureServer
from oos_notify.settings import Settings
from oos_notify.store.models import DeliveryAttempt, Incident, Notification
from tests.conftest import (
    RunningService,
    ack_link,
    received,
    release_failure,
    start_service,
)
from tests.smtp_faults import FaultySmtpServer

QA = "qa@manufacturer.example"
BACKUP = "ct-coord2@mercy.example"
PHYSICIAN = "ct-md@mercy.example"
PHARMACY_DIRECTOR = "rx-director@mercy.example"
ACCOUNT_LEAD = "al-midwest@manufacturer.example"
NAVIGATOR = "navigator@mercy.example"
ATTACKER = "attacker@evil.example"
HOSTILE_NAME = f"A. Rivera\r\nBcc: {ATTACKER}"


def second_incident() -> dict[str, Any]:
    return release_failure(
        event_id="QA-EVT-2026-000124", incident_ref="OOS-2026-0143", chain_of_identity="COI-2"
    )


async def open_incident(service: RunningService, event: dict[str, Any]) -> str:
    answer = await service.post_event(event)
    assert answer.status_code == 202, answer.text
    incident_id: str = answer.json()["incident_id"]
    return incident_id


async def detail(service: RunningService, incident_id: str) -> dict[str, Any]:
    answer = await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def notifications(
    service: RunningService, incident_id: str, level: int | None = None, kind: str = "escalation"
) -> list[dict[str, Any]]:
    return [
        n
        for n in (await detail(service, incident_id))["notifications"]
        if n["kind"] == kind and (level is None or n["level"] == level)
    ]


async def timeline(service: RunningService, incident_id: str) -> list[dict[str, Any]]:
    answer = await service.client.get(f"/v1/incidents/{incident_id}/timeline", headers=service.auth)
    assert answer.status_code == 200, answer.text
    result: list[dict[str, Any]] = answer.json()
    return result


def the_row(service: RunningService, incident_id: str, recipient: str, level: int) -> str:
    with Session(service.services.engine) as db:
        [row] = db.exec(
            select(Notification).where(
                Notification.incident_id == incident_id,
                Notification.recipient_email == recipient,
                Notification.level == level,
                Notification.kind == "escalation",
            )
        ).all()
        return row.id


def rename_recipient(service: RunningService, notification_id: str, name: str) -> None:
    with Session(service.services.engine) as db:
        row = db.get(Notification, notification_id)
        assert row is not None
        row.recipient_name = name
        db.add(row)
        db.commit()


def change_incident(service: RunningService, incident_id: str, **values: Any) -> None:
    with Session(service.services.engine) as db:
        incident = db.get(Incident, incident_id)
        assert incident is not None
        for name, value in values.items():
            setattr(incident, name, value)
        db.add(incident)
        db.commit()


def statuses(service: RunningService) -> list[str]:
    with Session(service.services.engine) as db:
        return list(db.exec(select(Notification.status)).all())


def attempts_of(service: RunningService, notification_id: str) -> list[tuple[str, int | None]]:
    with Session(service.services.engine) as db:
        rows = db.exec(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.notification_id == notification_id)
            .order_by(col(DeliveryAttempt.id))
        ).all()
        return [(a.outcome, a.smtp_code) for a in rows]


def to(messages: list[CapturedMessage], recipient: str) -> list[CapturedMessage]:
    return [m for m in messages if m.recipients == (recipient,)]


def nothing_reached_the_attacker(messages: list[CapturedMessage]) -> None:
    for message in messages:
        assert ATTACKER not in message.recipients
        assert message.message["Bcc"] is None
        assert all(ATTACKER not in str(value) for _, value in message.message.items())


async def test_a_message_that_cannot_be_built_fails_alone_and_the_escalation_goes_on(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given two incidents whose first notices went out
    first = await open_incident(service, release_failure())
    other = await open_incident(service, second_incident())
    await received(smtp, 6)
    await service.settle()
    # And a name with a line break on one of the four reminders due two hours later
    bad = the_row(service, first, BACKUP, level=1)
    rename_recipient(service, bad, f"Backup Coordinator\r\nBcc: {ATTACKER}")

    # When the reminders fall due and go out in one batch
    clock.advance(timedelta(hours=2))
    await service.settle()

    # Then the three clean ones are delivered, and nothing reaches the injected address
    messages = await received(smtp, 10)
    reminders = [m for m in messages if m.subject.startswith("Confirm now: ")]
    assert sorted(m.recipients[0] for m in reminders) == sorted([PHYSICIAN, BACKUP, PHYSICIAN])
    [backup] = to(reminders, BACKUP)
    assert "OOS-2026-0143" in backup.subject
    nothing_reached_the_attacker(messages)

    # And the bad one is failed, with its reason on the incident and in its timeline
    reason = (
        "cannot build the message: a To header cannot contain a line break or control character"
    )
    state = await detail(service, first)
    [failed] = [n for n in state["notifications"] if n["notification_id"] == bad]
    assert (failed["status"], failed["attempts"], failed["last_error"]) == ("failed", 1, reason)
    assert attempts_of(service, bad) == [("permanent", None)]
    assert any(
        e["action"] == "notification_failed"
        and e["notification_id"] == bad
        and e["detail"]["reply"] == reason
        and e["detail"]["smtp_code"] is None
        for e in await timeline(service, first)
    )

    # And QA is told who was not reached, and that the message was never sent
    [report] = to(messages, QA)
    assert (
        report.subject == "Reach the center: OOS-2026-0142, lot LOT-24-1187, notice not delivered"
    )
    for part in (report.part("plain"), report.part("html")):
        assert BACKUP in part and "could not be built" in part
        assert "a To header cannot contain a line break or control character" in part
    assert "refused" not in report.part("plain")

    # And nothing is left half-sent
    assert "sending" not in statuses(service)

    # And both escalations go on to their last step two business hours later
    clock.advance(timedelta(hours=2))
    await service.settle()
    finals = [m for m in smtp.handler.messages() if m.subject.startswith("Call the center: ")]
    assert sorted(m.recipients[0] for m in finals) == sorted([PHARMACY_DIRECTOR, ACCOUNT_LEAD] * 2)
    for incident_id in (first, other):
        assert {n["status"] for n in await notifications(service, incident_id, level=2)} == {"sent"}
    assert (await detail(service, first))["status"] == "escalated"


@pytest.mark.parametrize(
    ("qa_contact", "reason"),
    [
        (
            {"name": HOSTILE_NAME, "email": QA, "phone": "+1 555 0100"},
            "cannot build the message: a To header cannot contain a line break or control"
            " character",
        ),
        (
            {"name": "A. Rivera", "email": "qa@manufacturer.exämple", "phone": "+1 555 0100"},
            "cannot build the message: a To address must be ASCII",
        ),
    ],
    ids=["line-break-in-name", "non-ascii-domain"],
)
async def test_a_qa_receipt_that_cannot_be_built_fails_alone_and_says_qa_was_not_told(
    service: RunningService,
    smtp: CaptureServer,
    clock: ManualClock,
    qa_contact: dict[str, str],
    reason: str,
) -> None:
    # Given an incident whose QA contact cannot be written in a To header
    incident_id = await open_incident(service, release_failure())
    coordinator = next(
        m for m in await received(smtp, 3) if m.recipients == ("ct-coord@mercy.example",)
    )
    await service.settle()
    change_incident(service, incident_id, qa_contact=qa_contact)

    # When the coordinator confirms: QA's receipt and the liaison's brief go out together
    clock.advance(timedelta(minutes=20))
    link = ack_link(coordinator)
    assert (await service.client.post(link, data={"response": "received"})).status_code == 200
    await service.settle()

    # Then the liaison is briefed, and nothing reaches the injected address
    messages = await received(smtp, 4)
    assert len(to(messages, NAVIGATOR)) == 1
    nothing_reached_the_attacker(messages)

    # And the receipt is failed with its reason, and the incident says QA could not be told
    state = await detail(service, incident_id)
    [receipt] = [n for n in state["notifications"] if n["kind"] == "receipt"]
    assert receipt["status"] == "failed" and receipt["last_error"].startswith(reason)
    assert attempts_of(service, receipt["notification_id"]) == [("permanent", None)]
    entries = await timeline(service, incident_id)
    [not_told] = [e for e in entries if e["action"] == "qa_not_told"]
    assert not_told["notification_id"] == receipt["notification_id"]
    assert not_told["detail"]["reason"].startswith(reason)
    assert state["status"] == "acknowledged"

    # And nothing is left half-sent, nor tried again, nor reported in a loop
    assert "sending" not in statuses(service)
    count = len(state["notifications"])
    clock.advance(timedelta(hours=1))
    await service.settle()
    assert len((await detail(service, incident_id))["notifications"]) == count
    assert len(smtp.handler.messages()) == 4


@pytest.mark.parametrize(
    ("damage", "reports"),
    [
        # The report to QA needs the same context, so it fails too (and is not reported again)
        (lambda _: {"failed_attributes": [{"attribute": "viability", "odd": 1}]}, 1),
        # The report cannot even be planned: the incident's trail says QA was not told
        (lambda incident: {"agreement": {**incident.agreement, "contacts": "nobody"}}, 0),
    ],
    ids=["failed-attribute", "agreement"],
)
async def test_a_message_whose_facts_cannot_be_read_fails_alone(
    service: RunningService,
    smtp: CaptureServer,
    clock: ManualClock,
    damage: Callable[[Incident], dict[str, Any]],
    reports: int,
) -> None:
    # Given two incidents, one of which holds data no template context can be made from
    broken = await open_incident(service, release_failure())
    other = await open_incident(service, second_incident())
    await received(smtp, 6)
    await service.settle()
    with Session(service.services.engine) as db:
        incident = db.get(Incident, broken)
        assert incident is not None
        change_incident(service, broken, **damage(incident))

    # When both incidents' reminders fall due in one batch
    clock.advance(timedelta(hours=2))
    await service.settle()

    # Then the other incident's reminders go out
    messages = await received(smtp, 8)
    assert sorted(m.recipients[0] for m in messages[6:]) == sorted([BACKUP, PHYSICIAN])
    assert all("OOS-2026-0143" in m.subject for m in messages[6:])
    assert {n["status"] for n in await notifications(service, other, level=1)} == {"sent"}

    # And the broken incident's reminders are failed, saying why
    reminders = await notifications(service, broken, level=1)
    assert {n["status"] for n in reminders} == {"failed"} and len(reminders) == 2
    assert all(n["last_error"].startswith("cannot build the message: ") for n in reminders)

    # And QA could not be told: the incident's timeline says so for each of them
    failed_reports = await notifications(service, broken, kind="delivery_failure")
    assert len(failed_reports) == 2 * reports
    assert {n["status"] for n in failed_reports} <= {"failed"}
    not_told = [e for e in await timeline(service, broken) if e["action"] == "qa_not_told"]
    assert len(not_told) == 2

    # And nothing is left half-sent, nor tried again
    assert "sending" not in statuses(service)
    clock.advance(timedelta(minutes=30))
    await service.settle()
    assert len(smtp.handler.messages()) == 8


async def test_first_notices_that_cannot_be_built_bring_their_roles_next_notices_forward(
    settings: Settings, clock: ManualClock
) -> None:
    # Given a critical release failure (notify within 1 h) whose first notices wait for a mail
    # server that is away
    faulty = FaultySmtpServer()
    service = await start_service(settings.model_copy(update={"smtp_port": faulty.port}), clock)
    try:
        event = release_failure(severity="critical")
        incident_id = await open_incident(service, event)
        await service.settle()
        assert (await detail(service, incident_id))["severity"] == "critical"
        first = await notifications(service, incident_id, level=0)
        assert {n["status"] for n in first} == {"scheduled"} and len(first) == 3
        # And each has a name that cannot be written in a To header
        for notice in first:
            rename_recipient(service, notice["notification_id"], f"Coordinator\r\nBcc: {ATTACKER}")

        # When the server is back
        with faulty:
            await service.settle()
            messages = await received(faulty, 5)

            # Then every first notice fails and QA hears of each, and the coordinator's backup
            # and the physician hear at once, as for a bounce: nobody at the center was reached
            first = await notifications(service, incident_id, level=0)
            assert {n["status"] for n in first} == {"failed"}
            assert len(to(messages, QA)) == 3
            nothing_reached_the_attacker(messages)
            reminders = [m for m in messages if m.subject.startswith("Confirm now: ")]
            assert sorted(m.recipients[0] for m in reminders) == sorted([BACKUP, PHYSICIAN])

            # And the promise is met by the reminders that reached the center
            promise = (await detail(service, incident_id))["notify_within"]
            assert promise["state"] == "met" and promise["first_delivered_at"] is not None
            assert "sending" not in statuses(service)
    finally:
        await service.stop()
