"""Claiming due notifications: the right rows, and in time that does not grow with the backlog.

A service that fell behind (a lot-wide failure, a mail server back after an outage) has
thousands of rows due at once. Each claim must take the earliest due rows and look only them up,
or every batch walks the whole backlog and the service falls further behind the longer it is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.engine import Engine
from sqlmodel import col

from oos_notify.ids import new_id
from oos_notify.incidents import events
from oos_notify.incidents.events import EventIn
from oos_notify.ops import config_check
from oos_notify.store import outbox
from oos_notify.store.db import create_schema, make_engine, transaction
from oos_notify.store.models import Acknowledgement, Notification
from tests import databases
from tests.conftest import CONFIG_DIR, TEMPLATES_DIR, release_failure

OPENED = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
LEASE = timedelta(minutes=10)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A database holding one incident, opened the way POST /v1/events opens it."""
    engine = make_engine(databases.url_for(tmp_path))
    create_schema(engine)
    agreements, _ = config_check.load(CONFIG_DIR, TEMPLATES_DIR)
    with transaction(engine) as session:
        event_in = EventIn.model_validate(release_failure())
        events.ingest(session, event_in, agreements, OPENED, "oos.example")
    yield engine
    engine.dispose()


def add_rows(engine: Engine, due: list[datetime], **values: Any) -> list[str]:
    """Scheduled copies of the incident's first notice (``values`` changed), due at each
    instant; their ids in that order."""
    with transaction(engine) as session:
        first = session.execute(Notification.__table__.select().limit(1)).one()  # type: ignore[attr-defined]
        ids = [new_id("ntf") for _ in due]
        rows = [
            {
                **first._asdict(),
                "id": i,
                "message_id": f"<{i}@oos.example>",
                "due_at": at,
                "status": "scheduled",
                "lease_until": None,
                **values,
            }
            for i, at in zip(ids, due, strict=True)
        ]
        session.execute(Notification.__table__.insert(), rows)  # type: ignore[attr-defined]
    return ids


def claim(engine: Engine, now: datetime) -> list[str]:
    with transaction(engine) as session:
        return [n.id for n in outbox.claim_due(session, now, 50, LEASE, "test-sender/1")]


def test_a_claim_takes_the_earliest_due_rows(engine: Engine) -> None:
    now = OPENED + timedelta(hours=1)
    backlog = add_rows(engine, [OPENED + timedelta(seconds=n) for n in range(3000)])

    claimed = claim(engine, now)

    with transaction(engine) as session:
        rows = session.execute(select(col(Notification.id), col(Notification.due_at))).all()
    due_at: dict[str, datetime] = {row.id: row.due_at for row in rows}
    assert len(claimed) == 50 and set(claimed) & set(backlog)
    assert sorted(due_at[i] for i in claimed) == sorted(due_at.values())[:50]


@databases.sqlite_only("it reads SQLite's query plan; PostgreSQL's claims are tested below")
def test_sqlite_looks_up_only_the_claimed_rows(engine: Engine, tmp_path: Path) -> None:
    now = OPENED + timedelta(hours=1)
    add_rows(engine, [OPENED + timedelta(seconds=n) for n in range(3000)])
    statements: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        statements.append((statement, params))

    event.listen(engine, "before_cursor_execute", note)
    claim(engine, now)
    event.remove(engine, "before_cursor_execute", note)

    (update_sql, params), *_ = [s for s in statements if s[0].startswith("UPDATE notifications")]
    with sqlite3.connect(tmp_path / "oos.db") as db:
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {update_sql}", params)]
    assert plan == ["SEARCH notifications USING INDEX sqlite_autoindex_notifications_1 (id=?)"]


def test_a_claim_takes_over_an_expired_lease_and_leaves_a_live_one_and_the_future(
    engine: Engine,
) -> None:
    now = OPENED + timedelta(hours=1)
    with transaction(engine) as session:
        session.execute(update(Notification).values(status="sent"))
    expired, live = (
        add_rows(engine, [OPENED], status="sending", lease_until=now - timedelta(seconds=1)),
        add_rows(engine, [OPENED], status="sending", lease_until=now + timedelta(minutes=5)),
    )
    due, future = add_rows(engine, [now]), add_rows(engine, [now + timedelta(seconds=1)])

    assert sorted(claim(engine, now)) == sorted([*expired, *due])
    assert claim(engine, now) == []
    with transaction(engine) as session:
        untouched = {i: session.get(Notification, i) for i in [*live, *future]}
    assert {i: (n.status, n.attempts) for i, n in untouched.items() if n} == {
        live[0]: ("sending", 0),
        future[0]: ("scheduled", 0),
    }


# --- owners, leases and takeovers --------------------------------------------------------------

THIRTY = timedelta(seconds=30)


def claim_as(engine: Engine, owner: str, now: datetime) -> list[str]:
    with transaction(engine) as session:
        return sorted(n.id for n in outbox.claim_due(session, now, 50, THIRTY, owner))


def owners(engine: Engine, ids: list[str]) -> set[str | None]:
    with transaction(engine) as session:
        rows = session.execute(
            select(col(Notification.claimed_by)).where(col(Notification.id).in_(ids))
        )
        return set(rows.scalars())


def test_a_claim_names_its_owner_and_renewals_keep_it_until_its_owner_goes_quiet(
    engine: Engine,
) -> None:
    now = OPENED + timedelta(hours=1)
    mine = claim_as(engine, "worker-a/1111", now)
    assert mine and owners(engine, mine) == {"worker-a/1111"}

    # While its owner renews the lease every 10 s, nobody else may take the rows
    for seconds in (10, 20, 30, 40):
        with transaction(engine) as session:
            assert outbox.renew(session, "worker-a/1111", now + timedelta(seconds=seconds), THIRTY)
        assert claim_as(engine, "worker-b/2222", now + timedelta(seconds=seconds + 5)) == []

    # Once it has been silent for a whole lease, another sender takes them over
    assert claim_as(engine, "worker-b/2222", now + timedelta(seconds=71)) == mine
    assert owners(engine, mine) == {"worker-b/2222"}


def test_a_sender_whose_claim_was_taken_over_finds_the_rows_no_longer_its_own(
    engine: Engine,
) -> None:
    now = OPENED + timedelta(hours=1)
    mine = claim_as(engine, "worker-a/1111", now)
    taken = claim_as(engine, "worker-b/2222", now + timedelta(seconds=31))

    with transaction(engine) as session:
        assert outbox.still_claimed(session, mine, "worker-a/1111") == set()
        assert outbox.still_claimed(session, mine, "worker-b/2222") == set(taken)
        # and giving them back as the old owner changes nothing either, nor does giving them
        # back after a failed batch: the new owner sends and records them
        assert outbox.release_claims(session, mine, "worker-a/1111") == 0
        retry = now + timedelta(minutes=5)
        retries = dict.fromkeys(mine, retry)
        failed = "the dispatch run failed: OperationalError: disk full"
        assert outbox.release_after_error(session, retries, failed, now, "worker-a/1111") == 0
    assert owners(engine, taken) == {"worker-b/2222"}

    # When the new owner's batch fails as a whole, it gives its claims back, due at the retry
    with transaction(engine) as session:
        assert outbox.release_after_error(session, retries, failed, now, "worker-b/2222") == len(
            taken
        )
        rows = session.execute(
            select(Notification.__table__).where(col(Notification.id).in_(taken))  # type: ignore[attr-defined]
        ).all()
    assert {(r.status, r.claimed_by, r.lease_until, r.due_at, r.last_error) for r in rows} == {
        ("scheduled", None, None, retry, failed)
    }


def test_a_restart_under_the_same_name_takes_its_predecessors_claims_back_at_once(
    engine: Engine,
) -> None:
    now = OPENED + timedelta(hours=1)
    mine = claim_as(engine, "worker-a/1111", now)

    with transaction(engine) as session:
        # others, even with names that look alike, leave them alone
        assert outbox.release_predecessors(session, "worker-b", "worker-b/3333") == 0
        assert outbox.release_predecessors(session, "worker-%", "worker-%/3333") == 0
        assert outbox.release_predecessors(session, "worker", "worker/3333") == 0
        # a process started again as worker-a takes them back, well inside the lease
        assert outbox.release_predecessors(session, "worker-a", "worker-a/4444") == len(mine)

    assert claim_as(engine, "worker-a/4444", now + timedelta(seconds=1)) == mine


@databases.needs_postgresql
def test_senders_pass_each_others_locked_rows_by_instead_of_queueing(engine: Engine) -> None:
    now = OPENED + timedelta(hours=1)
    add_rows(engine, [OPENED + timedelta(seconds=n) for n in range(120)])
    pool = ThreadPoolExecutor(1)
    try:
        with transaction(engine) as first:
            held = {n.id for n in outbox.claim_due(first, now, 50, THIRTY, "worker-a/1111")}
            # While the first claim is not committed yet, a second sender claims at once
            second = pool.submit(claim_as, engine, "worker-b/2222", now).result(timeout=5)
    finally:
        pool.shutdown()
    assert len(held) == 50 and len(second) == 50
    assert held.isdisjoint(second)


@databases.needs_postgresql
def test_an_answer_about_a_notification_waits_for_no_sender_recording_its_outcome(
    engine: Engine,
) -> None:
    """A coordinator's answer names the notification its link came from, while the sender of
    that email may still be recording it: the answer must not queue behind the sender, which
    may itself be waiting for the incident the answer changed (a deadlock, one of them lost)."""
    now = OPENED + timedelta(hours=1)
    mine = claim_as(engine, "worker-a/1111", now)

    def answer(notification_id: str) -> None:
        with transaction(engine) as session:
            session.execute(text("SET LOCAL lock_timeout = '3s'"))
            row = session.execute(
                select(Notification.incident_id, Notification.contact_id).where(
                    col(Notification.id) == notification_id
                )
            ).one()
            session.execute(
                Acknowledgement.__table__.insert(),  # type: ignore[attr-defined]
                {
                    "id": new_id("ack"),
                    "incident_id": row.incident_id,
                    "notification_id": notification_id,
                    "contact_id": row.contact_id,
                    "email": "ct-coord@mercy.example",
                    "role": "coordinator",
                    "response": "received",
                    "at": now,
                },
            )

    pool = ThreadPoolExecutor(1)
    try:
        with transaction(engine) as sender:
            # The sender locks its rows to record their outcome, and holds them until it commits
            assert outbox.still_claimed(sender, mine, "worker-a/1111") == set(mine)
            pool.submit(answer, mine[0]).result(timeout=10)
            # and a second sender still cannot take them over meanwhile
            # (its lease ran out, but the rows are locked)
            assert set(claim_as(engine, "worker-b/2222", now + THIRTY * 2)).isdisjoint(mine)
    finally:
        pool.shutdown()
