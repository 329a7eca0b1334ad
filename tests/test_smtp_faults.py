"""Mail servers that fail: transient faults retried with jittered backoff, permanent ones failed,
shown and reported to the manufacturer's QA, and nothing lost while the server is away."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session as DbSession
from sqlmodel import col, select

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CapturedMessage
from oos_notify.delivery.dispatch import MAX_RETRY_DELAY, retry_delay
from oos_notify.settings import Settings
from oos_notify.store.models import DeliveryAttempt
from tests.conftest import RunningService, release_failure, start_service
from tests.smtp_faults import Fault, FaultySmtpServer

BASE = 30.0
"""The first retry waits BASE seconds, jittered by ±50 %; each further retry doubles it."""


@pytest.fixture
def faulty() -> Iterator[FaultySmtpServer]:
    server = FaultySmtpServer()
    try:
        yield server
    finally:
        server.down()


def through(settings: Settings, server: FaultySmtpServer, **changes: Any) -> Settings:
    return settings.model_copy(
        update={"smtp_port": server.port, "retry_base_seconds": BASE, **changes}
    )


async def incident(service: RunningService, incident_id: str) -> dict[str, Any]:
    answer = await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)
    assert answer.status_code == 200
    detail: dict[str, Any] = answer.json()
    return detail


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def by_notification(messages: list[CapturedMessage]) -> dict[str, set[str]]:
    """Every notification the server received, with the Message-IDs its copies carried."""
    found: dict[str, set[str]] = {}
    for message in messages:
        found.setdefault(str(message.message["X-OOS-Notification"]), set()).add(message.message_id)
    return found


def test_retry_delays_double_with_jitter_and_stop_growing_at_an_hour() -> None:
    for attempt in range(1, 8):
        ratios = [retry_delay(attempt, BASE).total_seconds() / (BASE * 2 ** (attempt - 1))]
        ratios += [
            retry_delay(attempt, BASE).total_seconds() / (BASE * 2 ** (attempt - 1))
            for _ in range(199)
        ]
        assert all(0.5 <= r <= 1.5 for r in ratios), attempt
        assert min(ratios) < 0.7 and max(ratios) > 1.3, "the jitter spreads retries out"
    assert all(retry_delay(attempt, BASE) <= MAX_RETRY_DELAY for attempt in range(8, 40))


TRANSIENT_FAULTS = [
    ("connection refused", None),
    ("421 at MAIL FROM", Fault("MAIL", "421 4.3.2 Service shutting down, try later")),
    ("451 at DATA", Fault("DATA", "451 4.3.0 Temporary local problem, try later")),
    ("reply slower than the client's timeout", Fault("DATA", delay=3.0)),
]


async def test_transient_faults_are_retried_with_exponential_backoff_and_jitter(
    settings: Settings, clock: ManualClock, faulty: FaultySmtpServer
) -> None:
    service = await start_service(through(settings, faulty, smtp_timeout_seconds=1.0), clock)
    try:
        # Given an incident whose first notices meet one mail-server fault after another
        answer = await service.post_event(release_failure())
        incident_id = answer.json()["incident_id"]
        for attempt, (fault_name, fault) in enumerate(TRANSIENT_FAULTS, start=1):
            if fault is None:
                faulty.down()
            else:
                faulty.up()
                faulty.handler.set_faults(fault)
            failed_at = clock.now()
            await service.settle()

            # Then each is back in the queue, its retry 30 s x 2^(attempt-1), jittered ±50 %
            first = [n for n in (await incident(service, incident_id))["notifications"]]
            first = [n for n in first if n["level"] == 0 and n["kind"] == "escalation"]
            assert len(first) == 3
            expected = BASE * 2 ** (attempt - 1)
            delays = []
            for n in first:
                assert n["status"] == "scheduled", fault_name
                assert n["attempts"] == attempt, fault_name
                assert n["last_error"], fault_name
                delays.append((instant(n["due_at"]) - failed_at).total_seconds())
            assert all(0.5 * expected <= d <= 1.5 * expected for d in delays), (fault_name, delays)
            assert len(set(delays)) == 3, "notices failing together retry apart (jitter)"

            # And nothing is tried again before its time
            clock.advance(timedelta(seconds=min(delays) - 1))
            await service.settle()
            assert all(
                n["attempts"] == attempt
                for n in (await incident(service, incident_id))["notifications"]
                if n["level"] == 0
            ), fault_name
            clock.advance(timedelta(seconds=max(delays) - min(delays) + 1))

        # When the server works again, each notice arrives, every copy under its Message-ID
        faulty.handler.set_faults()
        await service.settle()
        detail = await incident(service, incident_id)
        first = [n for n in detail["notifications"] if n["level"] == 0]
        assert {n["status"] for n in first} == {"sent"}
        assert all(n["attempts"] == len(TRANSIENT_FAULTS) + 1 for n in first)
        copies = by_notification(faulty.handler.messages())
        assert {n["notification_id"]: {n["message_id"]} for n in first}.items() <= copies.items()
        recipients = {m.recipients[0] for m in faulty.handler.messages()}
        assert recipients == {
            "ct-coord@mercy.example",
            "ct-md@mercy.example",
            "celllab@mercy.example",
        }

        # And every attempt is on record with what the server said
        with DbSession(service.services.engine) as db:
            attempts = db.exec(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.notification_id == first[0]["notification_id"])
                .order_by(col(DeliveryAttempt.id))
            ).all()
        assert [a.outcome for a in attempts] == ["unreachable"] + ["transient"] * 3 + ["sent"]
        assert [a.smtp_code for a in attempts] == [None, 421, 451, None, 250]
        assert (
            "refused" in (attempts[0].smtp_reply or "").lower()
            or "connect" in (attempts[0].smtp_reply or "").lower()
        )
        assert "timed out" in (attempts[3].smtp_reply or "").lower()
        assert detail["status"] == "notifying" and not [
            n for n in detail["notifications"] if n["kind"] == "delivery_failure"
        ]
    finally:
        await service.stop()


async def test_a_server_down_for_two_hours_loses_nothing(
    settings: Settings, clock: ManualClock, faulty: FaultySmtpServer
) -> None:
    # Given late results for three patients (the urgent plan: 8 messages each within an hour)
    service = await start_service(through(settings, faulty), clock)
    try:
        ids = []
        for number in range(3):
            answer = await service.post_event(
                release_failure(
                    event_id=f"EVT-DOWN-{number}",
                    incident_ref=f"OOS-DOWN-{number}",
                    chain_of_identity=f"COI-DOWN-{number}",
                    type="late_result",
                    severity="critical",
                )
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["incident_id"])
        # When the mail server is away for two hours: every step falls due during the outage
        for _ in range(120):
            clock.advance(timedelta(minutes=1))
            await service.settle()
        during = [n for i in ids for n in (await incident(service, i))["notifications"]]
        assert len(during) == 24
        assert {n["status"] for n in during} == {"scheduled"}, "nothing sent, nothing given up"
        assert min(n["attempts"] for n in during) >= 3
        metrics = (await service.client.get("/metrics")).text
        assert "oos_notify_notifications_retrying 24.0" in metrics.splitlines()
        assert "oos_notify_notifications_overdue 0.0" in metrics.splitlines()

        # Then once it is back, what was waiting goes at once, not at the end of its backoff
        faulty.up()
        await service.settle()
        after = [n for i in ids for n in (await incident(service, i))["notifications"]]
        assert {n["status"] for n in after} == {"sent"}
        copies = by_notification(faulty.handler.messages())
        assert copies == {n["notification_id"]: {n["message_id"]} for n in after}
        for i in ids:
            detail = await incident(service, i)
            assert detail["status"] == "escalated" and detail["escalation_level"] == 2
    finally:
        await service.stop()


LAB = "celllab@mercy.example"
QA = "qa@manufacturer.example"


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault("RCPT", "550 5.1.1 <celllab@mercy.example>: mailbox unavailable", LAB), 550),
        (Fault("DATA", "554 5.6.0 Message rejected by content policy", LAB), 554),
    ],
    ids=["550-at-RCPT", "554-at-DATA"],
)
async def test_a_permanent_rejection_is_failed_shown_reported_to_qa_and_escalation_goes_on(
    settings: Settings,
    clock: ManualClock,
    faulty: FaultySmtpServer,
    fault: Fault,
    code: int,
) -> None:
    # Given a mail server that refuses the cell lab's mailbox for good
    faulty.up().handler.set_faults(fault)
    service = await start_service(through(settings, faulty), clock)
    try:
        answer = await service.post_event(release_failure())
        incident_id = answer.json()["incident_id"]
        await service.settle()

        # Then the lab's notice is failed after one attempt, with the server's reply on show
        detail = await incident(service, incident_id)
        lab = next(n for n in detail["notifications"] if n["recipient"] == LAB)
        assert lab["status"] == "failed" and lab["attempts"] == 1
        assert fault.reply is not None and fault.reply.split(" ", 1)[1] in lab["last_error"]

        # And the QA contact of the event is told by email who was not reached, and why
        reports = [m for m in faulty.handler.messages() if m.recipients == (QA,)]
        assert len(reports) == 1
        [report] = reports
        assert report.subject == (
            "Reach the center: OOS-2026-0142, lot LOT-24-1187, notice not delivered"
        )
        for part in (report.part("plain"), report.part("html")):
            assert LAB in part and "Cell Processing Lab" in part
            assert str(code) in part and "release_failure_initial" in part
            assert "/ack/" not in part, "QA's report carries no acknowledgement link"
        # QA's first message of the incident: it points at no message, none went to QA before
        assert report.message["In-Reply-To"] is None
        [listed] = [n for n in detail["notifications"] if n["kind"] == "delivery_failure"]
        assert listed["recipient"] == QA and listed["status"] == "sent"
        timeline = (
            await service.client.get(f"/v1/incidents/{incident_id}/timeline", headers=service.auth)
        ).json()
        assert any(
            e["action"] == "notification_failed"
            and e["notification_id"] == lab["notification_id"]
            and e["detail"]["smtp_code"] == code
            for e in timeline
        )

        # And the escalation goes on to its next step two business hours later
        clock.advance(timedelta(hours=2))
        await service.settle()
        reminders = [m for m in faulty.handler.messages() if m.subject.startswith("Confirm now: ")]
        assert {m.recipients[0] for m in reminders} == {
            "ct-coord2@mercy.example",
            "ct-md@mercy.example",
        }
        assert (await incident(service, incident_id))["status"] == "escalated"
    finally:
        await service.stop()


async def test_a_notice_refused_until_its_attempts_run_out_is_failed_and_reported(
    settings: Settings, clock: ManualClock, faulty: FaultySmtpServer
) -> None:
    faulty.up().handler.set_faults(Fault("RCPT", "451 4.7.1 Greylisted, try again later", LAB))
    service = await start_service(through(settings, faulty, max_send_attempts=3), clock)
    try:
        incident_id = (await service.post_event(release_failure())).json()["incident_id"]
        for _ in range(3):
            await service.settle()
            clock.advance(timedelta(hours=1))
        await service.settle()
        detail = await incident(service, incident_id)
        lab = next(n for n in detail["notifications"] if n["recipient"] == LAB)
        assert lab["status"] == "failed" and lab["attempts"] == 3
        assert "Greylisted" in lab["last_error"]
        [report] = [m for m in faulty.handler.messages() if m.recipients == (QA,)]
        assert "after 3 attempts" in report.part("plain") and "451" in report.part("plain")
    finally:
        await service.stop()


async def test_a_report_that_cannot_be_delivered_is_not_reported_again(
    settings: Settings, clock: ManualClock, faulty: FaultySmtpServer
) -> None:
    faulty.up().handler.set_faults(
        Fault("RCPT", "550 5.1.1 mailbox unavailable", LAB),
        Fault("RCPT", "550 5.1.1 mailbox unavailable", QA),
    )
    service = await start_service(through(settings, faulty), clock)
    try:
        incident_id = (await service.post_event(release_failure())).json()["incident_id"]
        await service.settle()
        await service.settle()
        detail = await incident(service, incident_id)
        failed = sorted(
            (n["kind"], n["recipient"]) for n in detail["notifications"] if n["status"] == "failed"
        )
        assert failed == [("delivery_failure", QA), ("escalation", LAB)]
        assert len([n for n in detail["notifications"] if n["kind"] == "delivery_failure"]) == 1
    finally:
        await service.stop()


def lot_failure(number: int) -> dict[str, Any]:
    """Another incident of the same lot-wide failure: its own event, reference and lot."""
    return release_failure(
        event_id=f"QA-EVT-2026-{number:06d}",
        incident_ref=f"OOS-2026-{number:04d}",
        chain_of_identity=f"COI-8K2M-{number:04d}",
    )


async def first_notices(service: RunningService, answer: Any) -> list[dict[str, Any]]:
    assert answer.status_code == 202, answer.text
    detail = await incident(service, answer.json()["incident_id"])
    return [n for n in detail["notifications"] if n["level"] == 0 and n["kind"] == "escalation"]


async def test_connections_are_kept_between_batches_and_replaced_when_the_server_drops_them(
    settings: Settings, clock: ManualClock, faulty: FaultySmtpServer
) -> None:
    faulty.up()
    service = await start_service(through(settings, faulty), clock)
    try:
        # Given a first incident's notices sent
        first = await service.post_event(lot_failure(1))
        await service.settle()
        assert {n["status"] for n in await first_notices(service, first)} == {"sent"}
        # (over one connection per notice, up to the configured number; the check at start
        # that the server answers quits without a greeting)
        opened, quit = faulty.handler.sessions_opened, faulty.handler.sessions_quit
        lanes = min(settings.smtp_connections, 3)
        assert opened == lanes

        # When a second incident's notices go out a moment later
        clock.advance(timedelta(seconds=5))
        second = await service.post_event(lot_failure(2))
        await service.settle()
        # Then they are sent over the connections the first batch opened: no new one
        assert {n["status"] for n in await first_notices(service, second)} == {"sent"}
        assert faulty.handler.sessions_opened == opened
        assert faulty.handler.sessions_quit == quit

        # When the server drops every connection (a restart) before the next batch
        faulty.down()
        faulty.up()
        third = await service.post_event(lot_failure(3))
        await service.settle()
        # Then the broken connections are noticed and replaced: every notice is sent at its
        # first attempt, nothing is recorded as failed, and it reaches its recipient
        notices = await first_notices(service, third)
        assert {n["status"] for n in notices} == {"sent"}
        assert all(n["attempts"] == 1 and not n["last_error"] for n in notices)
        assert faulty.handler.sessions_opened > opened
        arrived = by_notification(faulty.handler.messages())
        assert all(n["notification_id"] in arrived for n in notices)
        recipients = {m.recipients[0] for m in faulty.handler.messages()}
        assert recipients == {
            "ct-coord@mercy.example",
            "ct-md@mercy.example",
            "celllab@mercy.example",
        }
        with DbSession(service.services.engine) as db:
            outcomes = db.exec(select(DeliveryAttempt.outcome)).all()
        assert set(outcomes) == {"sent"} and len(outcomes) == 9

        # When nothing is sent for longer than a connection may idle
        clock.advance(timedelta(seconds=31))
        await service.settle()
        # Then the service quits the connections it kept, politely
        assert faulty.handler.sessions_quit == quit + lanes
    finally:
        await service.stop()
