"""The audit trail is tamper-evident: `oos-notify audit verify` finds any entry changed afterwards.

A full incident runs through the real service; then each test edits a copy of its database the
way someone with database access might (change a field, delete or reorder rows, recompute a hash)
and checks the trail, as the command an auditor runs does.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.store import audit, signatures
from oos_notify.store.db import create_schema, make_engine, transaction
from oos_notify.store.models import AuditEntry
from tests import databases
from tests.conftest import (
    START,
    ack_link,
    received,
    release_failure,
    service_settings,
    start_service,
)

OOS_NOTIFY = str(Path(sys.executable).parent / "oos-notify")


async def run_full_incident(directory: Path) -> None:
    """Open, escalate, acknowledge and resolve an incident; every step leaves entries."""
    with CaptureServer() as smtp:
        clock = ManualClock(START)
        service = await start_service(service_settings(directory, smtp), clock)
        try:
            opened = await service.post_event(release_failure())
            assert opened.status_code == 202, opened.text
            first = await received(smtp, 3)
            link = ack_link(next(m for m in first if m.recipients[0] == "ct-coord@mercy.example"))
            clock.advance(timedelta(hours=2))
            await service.settle()
            await received(smtp, 5)
            confirmed = await service.client.post(link, data={"response": "received"})
            assert confirmed.status_code == 200
            await service.settle()
            resolved = await service.post_event(
                release_failure(event_id="QA-EVT-2026-000125", type="resolved")
            )
            assert resolved.status_code == 202, resolved.text
        finally:
            await service.stop()


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of a service that ran a full incident (its database: ``databases``)."""
    directory = tmp_path_factory.mktemp("trail")
    asyncio.run(run_full_incident(directory))
    return directory


@pytest.fixture
def database(trail: Path, tmp_path: Path) -> str:
    """The URL of a private copy of the trail's database, to tamper with."""
    return databases.copy(trail, tmp_path)


def verify(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOS_NOTIFY_")}
    env["OOS_NOTIFY_DATABASE_URL"] = database_url
    return subprocess.run(
        [OOS_NOTIFY, "audit", "verify"], env=env, capture_output=True, text=True, timeout=60
    )


def seq_of(db: Connection, action: str) -> int:
    found = db.execute(
        text("SELECT min(seq) FROM audit_entries WHERE action = :action"), {"action": action}
    ).scalar()
    assert found is not None, f"no {action!r} entry"
    return int(found)


def on_postgresql(db: Connection) -> bool:
    return db.dialect.name == "postgresql"


def test_the_trail_of_a_full_incident_verifies(database: str) -> None:
    engine = make_engine(database)
    with engine.connect() as db:
        count = db.execute(text("SELECT count(*) FROM audit_entries")).scalar()
        actions = set(db.execute(text("SELECT action FROM audit_entries")).scalars())
    engine.dispose()
    assert {"incident_opened", "notification_sent", "acknowledged"} <= actions

    result = verify(database)

    assert result.returncode == 0, result.stderr
    assert f"audit trail is intact: {count} entries" in result.stdout


def edit_acknowledgement(db: Connection) -> int:
    """The answer the coordinator gave is changed to one they did not give."""
    seq = seq_of(db, "acknowledged")
    edited = (
        """jsonb_set(detail::jsonb, '{response}', '"decline_product"')::json"""
        if on_postgresql(db)
        else "json_set(detail, '$.response', 'decline_product')"
    )
    db.execute(text(f"UPDATE audit_entries SET detail = {edited} WHERE seq = :seq"), {"seq": seq})
    return seq


def edit_time(db: Connection) -> int:
    """A late notification is made to look on time."""
    seq = seq_of(db, "notification_sent")
    earlier = "at - interval '1 hour'" if on_postgresql(db) else "datetime(at, '-1 hour')"
    db.execute(text(f"UPDATE audit_entries SET at = {earlier} WHERE seq = :seq"), {"seq": seq})
    return seq


def edit_actor(db: Connection) -> int:
    seq = seq_of(db, "acknowledged")
    db.execute(
        text("UPDATE audit_entries SET actor = 'ct-md@mercy.example' WHERE seq = :seq"),
        {"seq": seq},
    )
    return seq


def make_time_unreadable(db: Connection) -> int:
    seq = seq_of(db, "incident_opened")
    db.execute(text("UPDATE audit_entries SET at = 'yesterday' WHERE seq = :seq"), {"seq": seq})
    return seq


def neighbour(db: Connection, seq: int, after: bool) -> int:
    """The entry after (or before) ``seq`` in its chain."""
    found = db.execute(
        text(
            f"SELECT {'min' if after else 'max'}(seq) FROM audit_entries "
            f"WHERE seq {'>' if after else '<'} :seq "
            "AND chain = (SELECT chain FROM audit_entries WHERE seq = :seq)"
        ),
        {"seq": seq},
    ).scalar()
    assert found is not None, f"entry {seq} has no neighbour there in its chain"
    return int(found)


def delete_a_middle_row(db: Connection) -> int:
    """The acknowledgement is removed; the entry after it no longer follows its predecessor."""
    seq = seq_of(db, "acknowledged")
    after = neighbour(db, seq, after=True)
    db.execute(text("DELETE FROM audit_entries WHERE seq = :seq"), {"seq": seq})
    return after


def delete_the_last_row(db: Connection) -> int:
    last = int(db.execute(text("SELECT max(seq) FROM audit_entries")).scalar())
    before = neighbour(db, last, after=False)
    db.execute(text("DELETE FROM audit_entries WHERE seq = :seq"), {"seq": last})
    return before


def swap_two_hashes(db: Connection) -> int:
    first = seq_of(db, "notification_sent")
    second = seq_of(db, "acknowledged")
    db.execute(
        text(
            "UPDATE audit_entries SET entry_hash = CASE seq "
            "WHEN :a THEN (SELECT entry_hash FROM audit_entries WHERE seq = :b) "
            "ELSE (SELECT entry_hash FROM audit_entries WHERE seq = :a) END "
            "WHERE seq IN (:a, :b)"
        ),
        {"a": first, "b": second},
    )
    return first


def reorder_two_rows(db: Connection) -> int:
    """Two entries of a chain trade places (numbers), each intact on its own."""
    first = seq_of(db, "acknowledged")
    second = neighbour(db, first, after=True)
    renumber = text("UPDATE audit_entries SET seq = :to WHERE seq = :seq")
    db.execute(renumber, {"to": -1, "seq": first})
    db.execute(renumber, {"to": first, "seq": second})
    db.execute(renumber, {"to": second, "seq": -1})
    return first


def move_to_another_chain(db: Connection) -> int:
    """An entry is moved to the chain walked just before its own (its hash names its chain)."""
    seq = seq_of(db, "acknowledged")
    chain = db.execute(text("SELECT chain FROM audit_entries WHERE seq = :s"), {"s": seq}).scalar()
    db.execute(
        text("UPDATE audit_entries SET chain = :other WHERE seq = :seq"),
        {"other": int(chain) - 1 if chain else None, "seq": seq},
    )
    return seq


def edit_and_rehash(db: Connection) -> int:
    """Someone who knows the hash recomputes it for the edited entry: the next link breaks."""
    seq = seq_of(db, "acknowledged")
    edited = (
        """jsonb_set(detail::jsonb, '{comment}', '"never called"')::json"""
        if on_postgresql(db)
        else "json_set(detail, '$.comment', 'never called')"
    )
    db.execute(text(f"UPDATE audit_entries SET detail = {edited} WHERE seq = :seq"), {"seq": seq})
    with Session(db) as session:
        row = session.get(AuditEntry, seq)
        assert row is not None and row.detail["comment"] == "never called"
        rehashed = audit.recomputed_hash(row)
    db.execute(
        text("UPDATE audit_entries SET entry_hash = :hash WHERE seq = :seq"),
        {"hash": rehashed, "seq": seq},
    )
    return neighbour(db, seq, after=True)


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        pytest.param(edit_acknowledgement, "does not match its hash", id="answer-edited"),
        pytest.param(edit_time, "does not match its hash", id="time-edited"),
        pytest.param(edit_actor, "does not match its hash", id="actor-edited"),
        pytest.param(
            make_time_unreadable,
            "cannot be read",
            id="time-unreadable",
            marks=databases.sqlite_only(
                "a PostgreSQL timestamp column cannot hold a value that is not a timestamp"
            ),
        ),
        pytest.param(delete_a_middle_row, "does not follow", id="middle-row-deleted"),
        pytest.param(delete_the_last_row, "entries at its end were removed", id="last-row-deleted"),
        pytest.param(swap_two_hashes, "does not match its hash", id="hashes-swapped"),
        pytest.param(reorder_two_rows, "does not match its hash", id="rows-renumbered"),
        pytest.param(move_to_another_chain, "does not match its hash", id="chain-changed"),
        pytest.param(edit_and_rehash, "does not follow entry", id="edited-and-rehashed"),
    ],
)
def test_a_row_changed_in_the_database_is_caught_and_named(
    database: str, tamper: Callable[[Connection], int], says: str
) -> None:
    # Given someone edits the trail directly in the database
    engine = make_engine(database)
    with engine.begin() as db:
        broken = tamper(db)

    # When the trail is checked
    with Session(engine) as session:
        report = audit.verify(session)
    engine.dispose()

    # Then the check fails and names the first entry that no longer holds
    assert not report.intact
    assert report.broken_seq == broken
    assert report.problem is not None and says in report.problem


def test_an_auditor_running_verify_is_told_which_entry_broke(database: str) -> None:
    engine = make_engine(database)
    with engine.begin() as db:
        broken = edit_acknowledgement(db)
    engine.dispose()

    result = verify(database)

    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith(f"audit trail is broken at entry {broken}: its content")
    assert "Traceback" not in result.stderr


def test_verify_without_a_database_says_so(tmp_path: Path) -> None:
    result = verify(f"sqlite:///{tmp_path / 'nothing-here.db'}")

    assert result.returncode == 2
    assert "no audit trail" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "nothing-here.db").exists()


def test_concurrent_writers_keep_one_chain(tmp_path: Path) -> None:
    """Writers in several threads, without the service's write gate, still chain in one line."""
    engine = make_engine(databases.url_for(tmp_path))
    create_schema(engine)
    failures: list[BaseException] = []

    def write(writer: int) -> None:
        for n in range(25):
            try:
                with transaction(engine) as session:
                    for step in range(3):
                        audit.record(session, START, "test", f"writer-{writer}", n=n, step=step)
            except (OperationalError, AssertionError) as exc:
                failures.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    with Session(engine) as session:
        report = audit.verify(session)
        # The digest as of an entry, read from the chains' ends (the incident record's), is the
        # one a walk of the whole trail gives
        for as_of in [*range(0, report.last_seq, 37), report.last_seq]:
            assert audit.digest_as_of(session, as_of) == audit.verify(session, as_of=as_of).digest
    engine.dispose()
    assert failures == []
    assert report.intact, report.problem
    assert report.entries == report.last_seq == 4 * 25 * 3


def test_a_transactions_entries_keep_the_order_they_were_recorded_in(tmp_path: Path) -> None:
    engine = make_engine(databases.url_for(tmp_path))
    create_schema(engine)
    for batch in range(3):
        with transaction(engine) as session:
            for step in ("opened", "scheduled", "sent", "acknowledged", "closed"):
                audit.record(session, START, step, "test", batch=batch)

    with Session(engine) as session:
        entries = session.exec(select(AuditEntry).order_by(col(AuditEntry.seq))).all()
        report = audit.verify(session)
    engine.dispose()
    assert [(e.seq, e.action, e.detail["batch"]) for e in entries] == [
        (5 * batch + n + 1, step, batch)
        for batch in range(3)
        for n, step in enumerate(("opened", "scheduled", "sent", "acknowledged", "closed"))
    ]
    assert report.intact and report.last_seq == 15


def test_a_signature_that_does_not_match_what_it_signs_is_named(tmp_path: Path) -> None:
    """A signed entry whose content and signature disagree (written so, or edited and rehashed by
    someone who knows the hashing) fails verify at that entry, though its chain links hold."""
    engine = make_engine(databases.url_for(tmp_path))
    create_schema(engine)
    content = {"incident": "inc-1", "lot": "LOT-7", "choice": "decline", "meaning": "decision"}
    good = signatures.signed(
        content,
        signer="physician-1",
        method="password",
        printed_name="Dr. A. Decider",
        at=START,
        zone="America/Chicago",
        meaning="decision",
    )
    forged = {**good, signatures.SIGNED_CONTENT: {**content, "choice": "accept"}}
    with transaction(engine) as session:
        audit.record(session, START, "decision_recorded", "physician-1", **good)
    with transaction(engine) as session:
        audit.record(session, START, "decision_recorded", "physician-1", **forged)

    with Session(engine) as session:
        report = audit.verify(session)
        forged_seq = session.exec(select(func.max(AuditEntry.seq))).one()
    engine.dispose()

    assert not report.intact
    assert report.broken_seq == forged_seq
    assert report.problem == (
        "its signature does not match the content it signs: one of them was changed"
    )
