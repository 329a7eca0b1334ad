"""What the person running the service relies on: readiness that names the broken part, metrics
Prometheus can scrape, JSON logs with ids and without secrets, and a SIGTERM that loses no send."""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine, text
from sqlmodel import Session, select

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.delivery.dispatch import CLAIM_LEASE
from oos_notify.settings import Settings
from oos_notify.store.db import make_engine
from oos_notify.store.models import Notification
from tests import databases
from tests.conftest import (
    CONFIG_DIR,
    RunningService,
    ack_link,
    now,
    received,
    release_failure,
    start_service,
)
from tests.served import ServedProcess
from tests.smtp_faults import Fault, FaultySmtpServer

LAB = "celllab@mercy.example"
CLEAN_EXIT = (0, -signal.SIGTERM)
"""uvicorn re-raises SIGTERM once it has shut down cleanly."""


@pytest.fixture
def faulty() -> Iterator[FaultySmtpServer]:
    server = FaultySmtpServer().up()
    try:
        yield server
    finally:
        server.down()


async def ready(service: RunningService) -> tuple[int, dict[str, Any]]:
    answer = await service.client.get("/readyz")
    body: dict[str, Any] = answer.json()
    return answer.status_code, body


async def test_readyz_names_the_part_that_is_not_ready(
    settings: Settings, clock: ManualClock, faulty: FaultySmtpServer
) -> None:
    service = await start_service(settings.model_copy(update={"smtp_port": faulty.port}), clock)
    try:
        status, body = await ready(service)
        assert status == 200
        assert body == {
            "ready": True,
            "checks": {"database": "ok", "scheduler": "ok", "smtp": "ok"},
        }

        # A mail server that is away is reported; events are still taken and queued
        faulty.down()
        status, body = await ready(service)
        assert status == 200 and body["ready"] is True
        assert body["checks"]["smtp"].startswith("queueing, server unreachable:")
        assert (await service.post_event(release_failure())).status_code == 202

        # A database that cannot be opened makes the service unready, and says so
        working = service.services.engine
        service.services.engine = make_engine(databases.unreachable_url())
        try:
            status, body = await ready(service)
        finally:
            service.services.engine = working
        assert status == 503 and body["ready"] is False
        assert body["checks"]["database"] == "unreachable: OperationalError"
        assert body["checks"]["scheduler"] == "ok"

        # A stopped dispatcher makes it unready too
        assert service.services.dispatcher is not None
        await service.services.dispatcher.stop()
        status, body = await ready(service)
        assert status == 503 and body["checks"]["scheduler"] == "stopped"
        assert body["checks"]["database"] == "ok"
    finally:
        await service.stop()


def scrape(text_format: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, parsed by Prometheus's own client."""
    samples = {}
    for family in text_string_to_metric_families(text_format):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_count_events_notifications_latency_acknowledgements_and_overdue(
    settings: Settings, clock: ManualClock, faulty: FaultySmtpServer
) -> None:
    faulty.handler.set_faults(
        Fault("RCPT", "550 5.1.1 mailbox unavailable", "celllab@mercy.example")
    )
    service = await start_service(settings.model_copy(update={"smtp_port": faulty.port}), clock)
    try:
        # Given two incidents: the cell lab's notices bounce, one incident is acknowledged
        for number in (1, 2):
            answer = await service.post_event(
                release_failure(
                    event_id=f"EVT-M-{number}",
                    incident_ref=f"OOS-M-{number}",
                    chain_of_identity=f"COI-M-{number}",
                )
            )
            assert answer.status_code == 202
        await service.settle()
        messages = await received(faulty, 6)  # 2 coordinators, 2 physicians, 2 reports to QA
        coordinator = next(m for m in messages if m.recipients == ("ct-coord@mercy.example",))
        clock.advance(timedelta(minutes=20))
        link = ack_link(coordinator).replace(settings.public_base_url, "")
        assert (await service.client.post(link, data={"response": "received"})).status_code == 200
        await service.settle()
        # And the clock moves past the other incident's next step without the dispatcher running
        clock.advance(timedelta(hours=3))

        answer = await service.client.get("/metrics")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = scrape(answer.text)

        assert samples[("oos_notify_events_received_total", (("type", "release_failure"),))] == 2
        by_status = {
            status: samples[("oos_notify_notifications", (("status", status),))]
            for status in ("scheduled", "sending", "sent", "failed", "cancelled")
        }
        # sent: 2 coordinators, 2 physicians, 2 QA reports, the QA receipt and the brief
        assert by_status["sent"] == 8 and by_status["failed"] == 2
        assert by_status["sending"] == 0
        # the acknowledged incident's 4 escalations and 2 liaison alerts were cancelled
        assert by_status["cancelled"] == 6
        # the other incident's 4 escalations and 2 liaison alerts still wait
        assert by_status["scheduled"] == 6

        # Then the two notices of the step that fell due 80 minutes ago are overdue
        assert samples[("oos_notify_notifications_overdue", ())] == 2
        assert samples[("oos_notify_oldest_overdue_seconds", ())] == pytest.approx(4800, abs=1)
        assert samples[("oos_notify_notifications_retrying", ())] == 0

        # And every delivery attempt is in the latency histogram
        assert samples[("oos_notify_send_duration_seconds_count", ())] == 10
        assert samples[("oos_notify_send_duration_seconds_bucket", (("le", "+Inf"),))] == 10
        assert samples[("oos_notify_send_duration_seconds_sum", ())] > 0

        # And the acknowledgement, 20 minutes after the opening, is in the 30-minute bucket
        ack = "oos_notify_time_to_acknowledge_seconds"
        assert samples[(f"{ack}_count", ())] == 1
        assert samples[(f"{ack}_sum", ())] == pytest.approx(1200, abs=1)
        assert samples[(f"{ack}_bucket", (("le", "900"),))] == 0
        assert samples[(f"{ack}_bucket", (("le", "1800"),))] == 1
    finally:
        await service.stop()


async def metrics(service: RunningService) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = await service.client.get("/metrics")
    assert answer.status_code == 200
    return scrape(answer.text)


def claim_reminders_and_stall(service: RunningService, claimed_at: datetime) -> None:
    """Leave the two reminders due at 11:12 as a sender that claimed them then and stalled does."""
    with Session(service.services.engine) as db:
        rows = db.exec(
            select(Notification).where(Notification.level == 1, Notification.kind == "escalation")
        ).all()
        assert len(rows) == 2 and all(row.due_at == claimed_at for row in rows)
        for row in rows:
            row.status, row.attempts, row.lease_until = "sending", 1, claimed_at + CLAIM_LEASE
            row.claimed_by = "stalled-sender/0001"
            db.add(row)
        db.commit()


async def test_notifications_stuck_sending_count_as_overdue(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given an incident whose two reminders were claimed at 11:12 by a sender that then stalled
    assert (await service.post_event(release_failure())).status_code == 202
    await received(smtp, 3)
    await service.settle()
    clock.advance(timedelta(hours=2))
    claim_reminders_and_stall(service, clock.now())

    # When 10 seconds pass: they are overdue by 10 s, their claim (30 s) still running
    clock.advance(timedelta(seconds=10))
    samples = await metrics(service)
    assert samples[("oos_notify_notifications", (("status", "sending"),))] == 2
    assert samples[("oos_notify_notifications_overdue", ())] == 2
    assert samples[("oos_notify_oldest_overdue_seconds", ())] == pytest.approx(10, abs=1)
    assert samples[("oos_notify_notifications_lease_expired", ())] == 0

    # When their claim runs out unsettled: the sender is gone, and the metrics say so
    clock.advance(CLAIM_LEASE)
    samples = await metrics(service)
    assert samples[("oos_notify_notifications_overdue", ())] == 2
    overdue = (timedelta(seconds=10) + CLAIM_LEASE).total_seconds()
    assert samples[("oos_notify_oldest_overdue_seconds", ())] == pytest.approx(overdue, abs=1)
    assert samples[("oos_notify_notifications_lease_expired", ())] == 2

    # And once a sender takes them over and delivers them, nothing is overdue
    await service.settle()
    assert len(await received(smtp, 5)) == 5
    samples = await metrics(service)
    assert samples[("oos_notify_notifications_overdue", ())] == 0
    assert samples[("oos_notify_oldest_overdue_seconds", ())] == 0
    assert samples[("oos_notify_notifications_lease_expired", ())] == 0


def refuse_recording_sends(engine: Engine) -> None:
    """Make the database refuse to record a notification as sent, as a full disk or a broken
    constraint would: a trigger raising an integrity error, on either database."""
    with engine.begin() as db:
        if db.dialect.name == "postgresql":
            db.execute(
                text(
                    "CREATE FUNCTION refuse_sent() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'disk full' USING ERRCODE = 'check_violation'; "
                    "END $$"
                )
            )
            db.execute(
                text(
                    "CREATE TRIGGER refuse_sent BEFORE UPDATE OF status ON notifications "
                    "FOR EACH ROW WHEN (NEW.status = 'sent') EXECUTE FUNCTION refuse_sent()"
                )
            )
        else:
            db.execute(
                text(
                    "CREATE TRIGGER refuse_sent BEFORE UPDATE OF status ON notifications "
                    "WHEN NEW.status = 'sent' BEGIN SELECT RAISE(ABORT, 'disk full'); END"
                )
            )


def allow_recording_sends(engine: Engine) -> None:
    with engine.begin() as db:
        if db.dialect.name == "postgresql":
            db.execute(text("DROP TRIGGER refuse_sent ON notifications"))
            db.execute(text("DROP FUNCTION refuse_sent()"))
        else:
            db.execute(text("DROP TRIGGER refuse_sent"))


async def test_a_dispatcher_whose_runs_keep_failing_gives_back_its_claims_and_is_not_ready(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given a database that refuses to record a notification as sent
    refuse_recording_sends(service.services.engine)
    answer = await service.post_event(release_failure())
    incident_id = answer.json()["incident_id"]
    await received(smtp, 3)
    await service.settle()

    # Then the failed run leaves nothing 'sending': its claims go back to the queue, with why
    detail = (await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)).json()
    first = [n for n in detail["notifications"] if n["level"] == 0]
    assert {n["status"] for n in first} == {"scheduled"}
    for notice in first:
        assert notice["last_error"].startswith("the dispatch run failed: IntegrityError: disk full")
    # And one failed run is shown, but does not make the service unready
    status, body = await ready(service)
    assert status == 200
    assert body["checks"]["scheduler"] == "retrying: the last dispatch run failed (IntegrityError)"

    # When the runs keep failing
    for _ in range(2):
        clock.advance(timedelta(minutes=5))
        await service.settle()

    # Then the service is unready, naming the part, and the metrics count the failed runs
    status, body = await ready(service)
    assert status == 503 and body["ready"] is False
    assert body["checks"] == {
        "database": "ok",
        "scheduler": "failing: the last 3 dispatch runs failed (IntegrityError)",
        "smtp": "ok",
    }
    samples = await metrics(service)
    assert samples[("oos_notify_dispatch_runs_failed_total", ())] == 3
    assert samples[("oos_notify_dispatch_failing_runs", ())] == 3
    assert samples[("oos_notify_notifications", (("status", "sending"),))] == 0
    assert samples[("oos_notify_dispatcher_last_success_age_seconds", ())] >= 0

    # When the database records sends again, the notices are recorded and the service is ready
    allow_recording_sends(service.services.engine)
    clock.advance(timedelta(minutes=5))
    await service.settle()
    detail = (await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)).json()
    assert {n["status"] for n in detail["notifications"] if n["level"] == 0} == {"sent"}
    status, body = await ready(service)
    assert status == 200 and body["checks"]["scheduler"] == "ok"
    samples = await metrics(service)
    assert samples[("oos_notify_dispatch_failing_runs", ())] == 0
    assert samples[("oos_notify_dispatch_runs_failed_total", ())] == 3
    # Each failed run had sent the notices without recording them: they went out again under
    # their Message-ID, which receivers use to drop the duplicates
    assert len({m.message_id for m in smtp.handler.messages()}) == 3


async def test_a_dispatcher_that_finishes_no_run_for_long_is_not_ready(
    settings: Settings, clock: ManualClock
) -> None:
    # Given a dispatcher that sweeps every minute (the bound is then 10 min, not 3 sweeps)
    service = await start_service(settings.model_copy(update={"sweep_interval_seconds": 60}), clock)
    try:
        await service.settle()
        status, body = await ready(service)
        assert status == 200 and body["checks"]["scheduler"] == "ok"

        # When none of its runs finishes for 11 minutes
        clock.advance(timedelta(minutes=11))

        # Then the service is unready and says the dispatcher is stalled, and for how long
        status, body = await ready(service)
        assert status == 503
        assert body["checks"]["scheduler"] == "stalled: no dispatch run has finished for 660 s"
        samples = await metrics(service)
        assert samples[("oos_notify_dispatcher_last_success_age_seconds", ())] == 660

        # When a run finishes, it is ready again
        await service.settle()
        status, body = await ready(service)
        assert status == 200 and body["checks"]["scheduler"] == "ok"
    finally:
        await service.stop()


@pytest.fixture
def served(tmp_path: Path, faulty: FaultySmtpServer) -> Iterator[ServedProcess]:
    shutil.copytree(CONFIG_DIR, tmp_path / "config")
    process = ServedProcess(tmp_path, tmp_path / "config", faulty.port)
    try:
        yield process
    finally:
        process.stop()


def wait_for(condition: Any, what: str, timeout: float = 60) -> None:
    until = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > until:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_logs_are_json_lines_with_ids_and_no_secrets(
    served: ServedProcess, faulty: FaultySmtpServer
) -> None:
    # Given the service as an operator runs it, and a full incident: event, emails, ack
    key = served.api_key()
    served.start()
    headers = {"Authorization": f"Bearer {key}"}
    event = release_failure(at=now(), chain_of_identity="COI-LOGS-7Q2X")
    answer = httpx.post(f"{served.base}/v1/events", json=event, headers=headers, timeout=30)
    assert answer.status_code == 202
    incident_id = answer.json()["incident_id"]
    wait_for(lambda: faulty.handler.count >= 3, "the first notices")
    coordinator = next(
        m for m in faulty.handler.messages() if m.recipients == ("ct-coord@mercy.example",)
    )
    link = ack_link(coordinator)
    assert httpx.get(link, timeout=30).status_code == 200
    assert httpx.post(link, data={"response": "received"}, timeout=30).status_code == 200
    wrong_key = key[:-4] + "AAAA"
    assert (
        httpx.get(
            f"{served.base}/v1/incidents", headers={"Authorization": f"Bearer {wrong_key}"}
        ).status_code
        == 401
    )
    wait_for(lambda: faulty.handler.count >= 5, "the receipt and the brief")
    assert served.terminate() in CLEAN_EXIT

    # Then every line is one JSON object with time, level, logger and message
    lines = served.log.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)

    # And each send is logged with its incident and notification ids
    sent = [r for r in records if r["message"].startswith("sent ")]
    assert len(sent) == 5
    assert all(r["incident_id"] == incident_id and r["notification_id"] for r in sent)
    assert {r["recipient"] for r in sent} >= {"ct-coord@mercy.example", "celllab@mercy.example"}
    accepted = next(r for r in records if r.get("event_id") == event["event_id"])
    assert accepted["incident_id"] == incident_id
    assert any(r["message"].startswith("incident ") and r.get("incident_id") for r in records)

    # And no line holds the chain of identity, the ack token or the API key
    log = served.log.read_text()
    assert "COI-LOGS-7Q2X" not in log
    token = link.rsplit("/ack/", 1)[1]
    assert token not in log and token[:20] not in log
    assert "/ack/…" in log, "the ack requests are logged, without their token"
    for secret in (key, wrong_key):
        assert secret not in log and secret.split("_", 2)[2][:12] not in log


def test_sigterm_finishes_the_send_in_flight_records_it_and_claims_nothing_more(
    served: ServedProcess, faulty: FaultySmtpServer
) -> None:
    # Given a mail server that takes 6 seconds to accept each message, and one connection to it
    # (over several, both notices would be in flight at once and both finished); the delay is
    # the room a loaded machine has to deliver the signal while the first send is in flight
    faulty.handler.set_faults(Fault("DATA", delay=6.0))
    served.env["OOS_NOTIFY_SMTP_CONNECTIONS"] = "1"
    key = served.api_key()
    served.start()
    answer = httpx.post(
        f"{served.base}/v1/events",
        json=release_failure(at=now()),
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answer.status_code == 202
    # When the service is told to stop while the first of three notices is being sent
    assert faulty.handler.data_begun.wait(timeout=60)
    assert served.terminate() in CLEAN_EXIT

    # Then it waited for the server's answer, and sent nothing after it: the server keeps a
    # message only once it has answered, and the service recorded that answer before exiting
    [delivered] = faulty.handler.messages()
    assert faulty.handler.count == 1
    # And it recorded that send before exiting; the others are back in the queue, unspent
    engine = create_engine(served.database_url)
    with engine.connect() as db:
        rows = {
            row.recipient_email: row
            for row in db.execute(
                text(
                    "SELECT recipient_email, status, attempts, message_id, sent_at "
                    "FROM notifications WHERE level = 0 AND kind = 'escalation'"
                )
            )
        }
    engine.dispose()
    first = rows[delivered.recipients[0]]
    assert first.status == "sent" and first.sent_at is not None and first.attempts == 1
    assert first.message_id == delivered.message_id
    others = [row for email, row in rows.items() if email != delivered.recipients[0]]
    assert [(o.status, o.attempts) for o in others] == [("scheduled", 0)] * 2
    log = served.log.read_text()
    assert re.search(r"stopping: 2 claimed notifications go back to the queue", log)

    # And the next start sends the other ones, and only those
    faulty.handler.set_faults()
    served.start()
    wait_for(lambda: faulty.handler.count >= 3, "the other notices")
    time.sleep(1)
    recipients = sorted(m.recipients[0] for m in faulty.handler.messages())
    assert recipients == ["celllab@mercy.example", "ct-coord@mercy.example", "ct-md@mercy.example"]
