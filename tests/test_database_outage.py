"""While the database is unreachable every request is answered 503 with Retry-After (JSON for the
API, a page for people), /metrics answers with the database left out, and the outage is logged
once; once it is back, workers record what they did meanwhile and send at once."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.store.db import create_schema, make_engine
from oos_notify.store.outages import unreachable
from tests import databases
from tests.conftest import ack_link, release_failure, service_settings, start_service
from tests.console.conftest import QA_EMAIL, add_people, sign_in
from tests.reliability.outage import FIRST_NOTICE, run
from tests.smtp_faults import Fault, FaultySmtpServer
from tests.test_operations import scrape


@databases.needs_postgresql
@pytest.mark.skipif(os.geteuid() != 0, reason="starts a PostgreSQL cluster as the postgres user")
def test_a_database_outage_longer_than_the_lease_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path,
) -> None:
    # Given an api and a worker under load, when PostgreSQL stops for longer than the claim
    # lease (as messages are handed to the mail server) and starts again
    report = run(tmp_path, outage_seconds=8.0, lease_seconds=5.0)

    # Then clients were only ever told 503 with Retry-After and JSON while it was away
    assert set(report.answers_during_outage) == {"503"}, report.answers_during_outage
    assert set(report.answers) <= {"202", "200", "503"}, report.answers
    assert report.refusals_without_retry_after_or_json == 0
    # And the acknowledgement page said so to a person, as a page
    ack = [answer for page, answer in report.pages_during_outage.items() if "/ack" in page]
    assert ack == ["503 text/html Retry-After=5"] * 2, report.pages_during_outage
    readyz = report.pages_during_outage["GET /readyz"]
    assert '"database":"unreachable: OperationalError"' in readyz
    # And /metrics answered every scrape of both processes, saying the database was down
    for name, scrapes in report.metrics.items():
        assert set(scrapes.answers) == {"200"}, (name, scrapes.answers)
        assert scrapes.database_up["0.0"] > 0 and scrapes.database_up["1.0"] > 0, (name, scrapes)
    # And every accepted event's first notices arrived, each Message-ID once
    assert report.lost == [], report.lost
    assert report.sent_twice == {}, report.sent_twice
    assert report.events > 20 and FIRST_NOTICE
    # And an event posted a second after the return was told within 2 s
    assert report.probe_notices_seconds is not None and report.probe_notices_seconds < 2.0
    # And each process logged the outage once when it began and once when it ended
    for name, lines in report.log_lines.items():
        assert lines["database unreachable"] == 1, (name, lines)
        assert lines["database reachable again"] == 1, (name, lines)
        assert lines["tracebacks"] == 0, (name, lines)


@databases.sqlite_only("the database file's folder is moved away, as a lost disk would be")
async def test_a_database_file_that_cannot_be_opened_is_a_503_for_every_request(
    tmp_path: Path, smtp: CaptureServer, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a running service whose database file lies in a folder of its own, a signed-in
    # console user, and an acknowledgement link that was sent
    folder, away = tmp_path / "db", tmp_path / "away"
    folder.mkdir()
    service = await start_service(service_settings(folder, smtp), clock)
    try:
        add_people(service)
        assert (await sign_in(service.client, QA_EMAIL)).status_code == 303
        assert (await service.post_event(release_failure())).status_code == 202
        await service.settle()
        link = ack_link(smtp.handler.messages()[0]).split("/", 3)[3]

        # When the folder goes away and no open connection is left
        folder.rename(away)
        service.services.engine.dispose()

        # Then the API answers 503 with Retry-After and JSON, a key lookup included
        posted = await service.post_event(release_failure(event_id="QA-EVT-2", incident_ref="B"))
        listed = await service.client.get("/v1/incidents", headers=service.auth)
        for answer in (posted, listed):
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "5"
            assert answer.json() == {
                "detail": "the service cannot reach its database; retry after 5 s"
            }
        # And a person's pages answer 503 with a page: the acknowledgement link and the console
        opened = await service.client.get(f"/{link}")
        confirmed = await service.client.post(f"/{link}", data={"response": "received"})
        board = await service.client.get("/console")
        for answer in (opened, confirmed, board):
            assert answer.status_code == 503
            assert answer.headers["content-type"].startswith("text/html")
            assert answer.headers["Retry-After"] == "5"
        assert "Your link still works" in opened.text
        assert "cannot reach its database" in board.text
        # And /readyz says why, while /metrics answers without the database's metrics
        ready = await service.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "unreachable: OperationalError"
        scraped = await service.client.get("/metrics")
        assert scraped.status_code == 200
        samples = scrape(scraped.text)
        assert samples[("oos_notify_database_up", ())] == 0
        assert ("oos_notify_dispatch_failing_runs", ()) in samples
        assert not any(name.startswith("oos_notify_notifications") for name, _ in samples)

        # When the folder is back
        away.rename(folder)

        # Then requests are served again, and the outage was logged once each way
        again = await service.post_event(release_failure(event_id="QA-EVT-3", incident_ref="C"))
        assert again.status_code == 202, again.text
        assert (
            scrape((await service.client.get("/metrics")).text)[("oos_notify_database_up", ())] == 1
        )
    finally:
        await service.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "oos_notify.store.outages"]
    assert len(messages) == 2, messages
    assert messages[0].startswith("database unreachable (OperationalError: unable to open")
    assert messages[1].startswith("database reachable again after ")
    assert not [r for r in caplog.records if r.exc_info], "no traceback for an outage"


@databases.sqlite_only("the database file's folder is moved away, as a lost disk would be")
async def test_a_worker_records_what_it_sent_as_the_database_went_away_and_sends_it_once(
    tmp_path: Path, clock: ManualClock
) -> None:
    # Given a mail server that holds each message for a second, and an event whose first
    # notices are being handed to it
    folder, away = tmp_path / "db", tmp_path / "away"
    folder.mkdir()
    with FaultySmtpServer() as faulty:
        faulty.handler.set_faults(Fault("DATA", delay=1.0))
        settings = service_settings(folder, None, smtp_host=faulty.host, smtp_port=faulty.port)
        service = await start_service(settings, clock)
        try:
            incident_id = (await service.post_event(release_failure())).json()["incident_id"]
            assert await asyncio.to_thread(faulty.handler.data_begun.wait, 30)

            # When the database goes away while the server accepts them
            folder.rename(away)
            service.services.engine.dispose()
            await asyncio.to_thread(faulty.handler.wait_for, len(FIRST_NOTICE), 30)
            await service.settle()

            # And comes back after the notices' claims ran out
            away.rename(folder)
            clock.advance(timedelta(minutes=2))
            await service.settle()

            # Then the worker recorded them as sent, and sent none of them again
            detail = await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)
            first = [n for n in detail.json()["notifications"] if n["level"] == 0]
            assert {n["status"] for n in first} == {"sent"}, first
        finally:
            await service.stop()
    ids = [m.message_id for m in faulty.handler.messages()]
    assert len(ids) == len(FIRST_NOTICE) == len(set(ids)), ids
    assert {m.recipients[0] for m in faulty.handler.messages()} == FIRST_NOTICE


def test_only_an_unreachable_database_counts_as_an_outage(tmp_path: Path) -> None:
    # A database that cannot be reached is an outage (503) ...
    away = make_engine(databases.unreachable_url())
    with pytest.raises(OperationalError) as lost:
        away.connect()
    assert unreachable(lost.value)
    away.dispose()
    # ... a statement the database refuses is not: it stays an error of its own (SQLite reports
    # "no such table" as an OperationalError too)
    engine = make_engine(databases.url_for(tmp_path))
    create_schema(engine)
    with pytest.raises(DBAPIError) as refused, engine.connect() as connection:
        connection.execute(text("SELECT * FROM no_such_table"))
    assert not unreachable(refused.value)
    engine.dispose()


@databases.needs_postgresql
def test_a_pooled_connection_the_server_ended_is_replaced_before_a_request_meets_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a pooled connection whose session the server ended, as a restart ends them all
    url = databases.url_for(tmp_path)
    engine, admin = make_engine(url), make_engine(url)
    create_schema(engine)
    with engine.connect() as connection:
        ended = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with admin.connect() as connection:
        # Returns once that session has ended, its goodbye sent
        stop = text("SELECT pg_terminate_backend(:pid, 30000)")
        assert connection.execute(stop, {"pid": ended}).scalar_one()

    # When the next request takes a connection from the pool
    with engine.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()

    # Then it works, on a fresh session, and no outage was logged
    assert pid != ended
    assert "database unreachable" not in caplog.text
    engine.dispose()
    admin.dispose()
