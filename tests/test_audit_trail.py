"""The audit trail is tamper-evident: `oos-notify audit verify` finds any entry changed afterwards.

A full incident runs through the real service; then each test edits a copy of its SQLite file the
way someone with database access might (change a field, delete or reorder rows, recompute a hash)
and checks the trail, as the command an auditor runs does.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.store import audit
from oos_notify.store.db import create_schema, make_engine, transaction
from oos_notify.store.models import AuditEntry
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
    """The SQLite file of a service that ran a full incident, checkpointed into one file."""
    directory = tmp_path_factory.mktemp("trail")
    asyncio.run(run_full_incident(directory))
    return directory / "oos.db"


@pytest.fixture
def database(trail: Path, tmp_path: Path) -> Path:
    """A private copy of the trail's database to tamper with."""
    copy = tmp_path / "copy.db"
    with closing(sqlite3.connect(trail)) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)
    return copy


def verify(database: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOS_NOTIFY_")}
    env["OOS_NOTIFY_DATABASE_URL"] = f"sqlite:///{database}"
    return subprocess.run(
        [OOS_NOTIFY, "audit", "verify"], env=env, capture_output=True, text=True, timeout=60
    )


def seq_of(db: sqlite3.Connection, action: str) -> int:
    row = db.execute("SELECT min(seq) FROM audit_entries WHERE action = ?", (action,)).fetchone()
    assert row[0] is not None, f"no {action!r} entry"
    return int(row[0])


def test_the_trail_of_a_full_incident_verifies(database: Path) -> None:
    with closing(sqlite3.connect(database)) as db:
        count = db.execute("SELECT count(*) FROM audit_entries").fetchone()[0]
        actions = {a for (a,) in db.execute("SELECT action FROM audit_entries")}
    assert {"incident_opened", "notification_sent", "acknowledged"} <= actions

    result = verify(database)

    assert result.returncode == 0, result.stderr
    assert f"audit trail is intact: {count} entries" in result.stdout


def edit_acknowledgement(db: sqlite3.Connection) -> int:
    """The answer the coordinator gave is changed to one they did not give."""
    seq = seq_of(db, "acknowledged")
    db.execute(
        "UPDATE audit_entries SET detail = json_set(detail, '$.response', 'decline_product') "
        "WHERE seq = ?",
        (seq,),
    )
    return seq


def edit_time(db: sqlite3.Connection) -> int:
    """A late notification is made to look on time."""
    seq = seq_of(db, "notification_sent")
    db.execute("UPDATE audit_entries SET at = datetime(at, '-1 hour') WHERE seq = ?", (seq,))
    return seq


def edit_actor(db: sqlite3.Connection) -> int:
    seq = seq_of(db, "acknowledged")
    db.execute("UPDATE audit_entries SET actor = 'ct-md@mercy.example' WHERE seq = ?", (seq,))
    return seq


def make_time_unreadable(db: sqlite3.Connection) -> int:
    seq = seq_of(db, "incident_opened")
    db.execute("UPDATE audit_entries SET at = 'yesterday' WHERE seq = ?", (seq,))
    return seq


def delete_a_middle_row(db: sqlite3.Connection) -> int:
    """The acknowledgement is removed; the entry after it no longer follows its predecessor."""
    seq = seq_of(db, "acknowledged")
    db.execute("DELETE FROM audit_entries WHERE seq = ?", (seq,))
    (after,) = db.execute("SELECT min(seq) FROM audit_entries WHERE seq > ?", (seq,)).fetchone()
    return int(after)


def delete_the_last_row(db: sqlite3.Connection) -> int:
    (last,) = db.execute("SELECT max(seq) FROM audit_entries").fetchone()
    db.execute("DELETE FROM audit_entries WHERE seq = ?", (last,))
    return int(last) - 1


def swap_two_hashes(db: sqlite3.Connection) -> int:
    first = seq_of(db, "notification_sent")
    second = seq_of(db, "acknowledged")
    db.execute(
        "UPDATE audit_entries SET entry_hash = CASE seq "
        "WHEN :a THEN (SELECT entry_hash FROM audit_entries WHERE seq = :b) "
        "ELSE (SELECT entry_hash FROM audit_entries WHERE seq = :a) END "
        "WHERE seq IN (:a, :b)",
        {"a": first, "b": second},
    )
    return first


def reorder_two_rows(db: sqlite3.Connection) -> int:
    """Two entries trade places, each intact on its own."""
    first = seq_of(db, "acknowledged")
    db.execute("UPDATE audit_entries SET seq = -1 WHERE seq = ?", (first,))
    db.execute("UPDATE audit_entries SET seq = ? WHERE seq = ?", (first, first + 1))
    db.execute("UPDATE audit_entries SET seq = ? WHERE seq = -1", (first + 1,))
    return first


def edit_and_rehash(db: sqlite3.Connection) -> int:
    """Someone who knows the hash recomputes it for the edited entry: the next link breaks."""
    seq = seq_of(db, "acknowledged")
    db.execute(
        "UPDATE audit_entries SET detail = json_set(detail, '$.comment', 'never called') "
        "WHERE seq = ?",
        (seq,),
    )
    engine = make_engine(f"sqlite:///{db.execute('PRAGMA database_list').fetchone()[2]}")
    db.commit()
    with Session(engine) as session:
        row = session.get(AuditEntry, seq)
        assert row is not None and row.detail["comment"] == "never called"
        rehashed = audit.recomputed_hash(row)
    engine.dispose()
    db.execute("UPDATE audit_entries SET entry_hash = ? WHERE seq = ?", (rehashed, seq))
    return seq + 1


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        pytest.param(edit_acknowledgement, "does not match its hash", id="answer-edited"),
        pytest.param(edit_time, "does not match its hash", id="time-edited"),
        pytest.param(edit_actor, "does not match its hash", id="actor-edited"),
        pytest.param(make_time_unreadable, "cannot be read", id="time-unreadable"),
        pytest.param(delete_a_middle_row, "does not follow entry", id="middle-row-deleted"),
        pytest.param(delete_the_last_row, "entries at the end were removed", id="last-row-deleted"),
        pytest.param(swap_two_hashes, "does not match its hash", id="hashes-swapped"),
        pytest.param(reorder_two_rows, "does not follow entry", id="rows-reordered"),
        pytest.param(edit_and_rehash, "does not follow entry", id="edited-and-rehashed"),
    ],
)
def test_a_row_changed_in_the_database_is_caught_and_named(
    database: Path, tamper: Callable[[sqlite3.Connection], int], says: str
) -> None:
    # Given someone edits the trail directly in the database file
    with closing(sqlite3.connect(database)) as db, db:
        broken = tamper(db)

    # When the trail is checked
    engine = make_engine(f"sqlite:///{database}")
    with Session(engine) as session:
        report = audit.verify(session)
    engine.dispose()

    # Then the check fails and names the first entry that no longer holds
    assert not report.intact
    assert report.broken_seq == broken
    assert report.problem is not None and says in report.problem


def test_an_auditor_running_verify_is_told_which_entry_broke(database: Path) -> None:
    with closing(sqlite3.connect(database)) as db, db:
        broken = edit_acknowledgement(db)

    result = verify(database)

    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith(f"audit trail is broken at entry {broken}: its content")
    assert "Traceback" not in result.stderr


def test_verify_without_a_database_says_so(tmp_path: Path) -> None:
    result = verify(tmp_path / "nothing-here.db")

    assert result.returncode == 2
    assert "no audit trail" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "nothing-here.db").exists()


def test_concurrent_writers_keep_one_chain(tmp_path: Path) -> None:
    """Writers in several threads, without the service's write gate, still chain in one line."""
    engine = make_engine(f"sqlite:///{tmp_path / 'oos.db'}")
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
    engine.dispose()
    assert failures == []
    assert report.intact, report.problem
    assert report.entries == report.head_seq == 4 * 25 * 3
