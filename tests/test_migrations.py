"""Schema migrations: an empty database and one made by release 5d7c067 both reach the schema the
models describe; the models cannot change without a migration; migrating is one process's job
however many start together; and a PostgreSQL database is never upgraded behind an operator's
back."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlmodel import Session, SQLModel, select

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.store import audit, migrate
from oos_notify.store.db import SchemaNotReady, create_schema, make_engine
from oos_notify.store.models import Notification
from tests import databases
from tests.conftest import CONFIG_DIR, TEMPLATES_DIR, received, service_settings, start_service

FIXTURES = Path(__file__).parent / "fixtures"
OOS_NOTIFY = str(Path(sys.executable).parent / "oos-notify")


def oos_notify(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOS_NOTIFY_")}
    env |= {
        "OOS_NOTIFY_DATABASE_URL": url,
        "OOS_NOTIFY_CONFIG_DIR": str(CONFIG_DIR),
        "OOS_NOTIFY_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "OOS_NOTIFY_LOG_FORMAT": "text",
    }
    return subprocess.run([OOS_NOTIFY, *args], env=env, capture_output=True, text=True, timeout=120)


# --- the scripts and the models ----------------------------------------------------------------


def test_the_revisions_are_one_numbered_line() -> None:
    scripts = list(reversed(list(migrate.scripts().walk_revisions())))
    assert [s.revision for s in scripts] == [f"{n:04d}" for n in range(1, len(scripts) + 1)]
    assert [s.down_revision for s in scripts] == [None, *(s.revision for s in scripts[:-1])]
    assert all(Path(s.path).name.startswith(f"{s.revision}_") for s in scripts)
    assert migrate.scripts().get_heads() == [migrate.head()]
    # start-up reads the revisions from the file names, without loading Alembic: the same answers
    assert [migrate.describe(s.revision) for s in scripts] == [
        f"{s.revision} ({s.doc})" for s in scripts
    ]
    assert all(migrate.known(s.revision) for s in scripts) and not migrate.known("9999")


def test_an_empty_database_is_migrated_to_the_schema_the_models_describe(tmp_path: Path) -> None:
    engine = make_engine(databases.empty_url_for(tmp_path))
    assert migrate.state(engine).empty

    migrate.upgrade(engine)

    assert migrate.state(engine).at_head
    assert migrate.drift(engine) == []
    engine.dispose()


def test_a_model_changed_without_a_migration_is_caught(tmp_path: Path) -> None:
    engine = make_engine(databases.url_for(tmp_path))
    create_schema(engine)
    table = SQLModel.metadata.tables["incidents"]
    extra = sa.Column("ticket", sa.String(), nullable=True)
    table.append_column(extra)
    try:
        found = migrate.drift(engine)
    finally:
        table._columns.remove(extra)
    engine.dispose()

    assert [(d[0], d[3].name) for d in found] == [("add_column", "ticket")]


def schema(url: str) -> dict[str, Any]:
    """Every table's columns, keys and indexes, as SQLAlchemy reads them back."""
    engine = sa.create_engine(url)
    inspector = sa.inspect(engine)
    found = {
        table: {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)
            ],
            "primary key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign keys": sorted(
                (tuple(k["constrained_columns"]), k["referred_table"])
                for k in inspector.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
            ),
        }
        for table in inspector.get_table_names()
        if table != "alembic_version"
    }
    engine.dispose()
    return found


def test_the_baseline_is_the_schema_release_5d7c067_made(tmp_path: Path) -> None:
    """The release's own database, not a copy of its models, is the reference."""
    baseline = f"sqlite:///{tmp_path / 'baseline.db'}"
    engine = make_engine(baseline)
    migrate.upgrade(engine, migrate.BASELINE)
    engine.dispose()

    assert schema(baseline) == schema(f"sqlite:///{FIXTURES / 'release-5d7c067.db'}")


# --- a database made by release 5d7c067 --------------------------------------------------------


def load_dump(url: str, dump: Path) -> None:
    """Restore a plain ``pg_dump`` into an empty database, as ``psql`` would."""
    script = "\n".join(
        line for line in dump.read_text(encoding="utf-8").splitlines() if not line.startswith("\\")
    )
    conninfo = sa.make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(script.encode())


@pytest.fixture
def released(tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """A database release 5d7c067 wrote, on the database under test, and what it holds."""
    if databases.ON_POSTGRESQL:
        url = databases.empty_url_for(tmp_path)
        load_dump(url, FIXTURES / "release-5d7c067.sql")
        facts = FIXTURES / "release-5d7c067-postgresql.json"
    else:
        shutil.copy(FIXTURES / "release-5d7c067.db", tmp_path / "release.db")
        url = f"sqlite:///{tmp_path / 'release.db'}"
        facts = FIXTURES / "release-5d7c067-sqlite.json"
    return url, json.loads(facts.read_text(encoding="utf-8"))


async def test_a_database_made_by_release_5d7c067_is_upgraded_with_its_data_and_trail_intact(
    released: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    url, made = released
    engine = make_engine(url)
    before = migrate.state(engine)
    assert before.revision is None and before.has_tables

    # When the operator upgrades it
    upgraded = oos_notify(url, "db", "upgrade")

    # Then it is at head, stamped from the baseline, and exactly what the models describe
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"upgraded from none to {migrate.head()}" in upgraded.stdout
    assert migrate.state(engine).at_head
    assert migrate.drift(engine) == []
    # And its audit trail verifies as the release left it: every entry, the same head
    trail = oos_notify(url, "audit", "verify")
    assert trail.returncode == 0, trail.stderr
    last, head = made["audit_entries"], made["audit_head"]
    ends = [f"{last} {head}", *[f"0 {head}"] * audit.CHAINS]  # every new chain starts there
    digest = hashlib.sha256("\n".join(ends).encode()).hexdigest()
    assert (
        f"audit trail is intact: {last} entries, up to entry {last}; "
        f"as of entry {last} its digest is sha256 {digest}" in trail.stdout
    )

    # And this version serves it: the release's API key reads its incidents as they were
    clock = ManualClock(datetime(2026, 11, 24, 20, 10, tzinfo=UTC))
    with CaptureServer() as smtp:
        settings = service_settings(tmp_path, smtp, database_url=url)
        service = await start_service(settings, clock, api_key=made["api_key"])
        try:
            incidents = made["incidents"]
            shown = {}
            for ref, incident_id in incidents.items():
                answer = await service.client.get(
                    f"/v1/incidents/{incident_id}", headers=service.auth
                )
                assert answer.status_code == 200, answer.text
                shown[ref] = answer.json()
            assert {ref: shown[ref]["status"] for ref in shown} == {
                "OOS-2026-0142": "resolved",
                "OOS-2026-0143": "acknowledged",
                "OOS-2026-0144": "notifying",
            }
            assert shown["OOS-2026-0142"]["decision"] == "accept_oos_product"
            failed = [n for n in shown["OOS-2026-0142"]["notifications"] if n["status"] == "failed"]
            assert [n["recipient"] for n in failed] == ["celllab@mercy.example"]
            # And the escalation the release had scheduled goes out when due, under its own ids
            clock.advance(timedelta(hours=2))
            await service.settle()
            reminders = await received(smtp, 2)
        finally:
            await service.stop()
    with Session(engine) as session:
        stored = {
            n.message_id: n.recipient_email
            for n in session.exec(
                select(Notification).where(
                    Notification.incident_id == incidents["OOS-2026-0144"],
                    Notification.level == 1,
                    Notification.kind == "escalation",
                )
            )
        }
    engine.dispose()
    assert {m.message_id: m.recipients[0] for m in reminders} == stored
    assert sorted(stored.values()) == ["ct-coord2@mercy.example", "ct-md@mercy.example"]
    # And the new entries extend the trail, which still verifies end to end, and still has the
    # digest it had at the release's last entry
    after = oos_notify(url, "audit", "verify")
    assert after.returncode == 0, after.stderr
    entries = int(re.search(r"intact: (\d+) entries", after.stdout).group(1))  # type: ignore[union-attr]
    assert entries > last
    then = oos_notify(url, "audit", "verify", "--as-of", str(last))
    assert f"as of entry {last} its digest is sha256 {digest}" in then.stdout
    # And the digest an incident record prints is the one verify gives, across the old chain
    engine = make_engine(url)
    with Session(engine) as session:
        for as_of in (1, last, last + 1, entries):
            assert audit.digest_as_of(session, as_of) == audit.verify(session, as_of=as_of).digest
        assert audit.digest_as_of(session, last) == digest
    engine.dispose()


@databases.sqlite_only(
    "a SQLite file is owned by one process, which upgrades it; PostgreSQL is refused instead "
    "(test_serve_refuses_an_out_of_date_postgresql_schema_and_says_what_to_run)"
)
async def test_the_embedded_sqlite_database_upgrades_itself_at_start(
    released: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    url, made = released
    clock = ManualClock(datetime(2026, 11, 24, 20, 10, tzinfo=UTC))
    settings = service_settings(tmp_path, None, database_url=url)
    service = await start_service(settings, clock, api_key=made["api_key"])
    await service.stop()

    engine = make_engine(url)
    assert migrate.state(engine).at_head
    engine.dispose()


@databases.needs_postgresql
def test_serve_refuses_an_out_of_date_postgresql_schema_and_says_what_to_run(
    released: tuple[str, dict[str, Any]],
) -> None:
    url, _ = released

    refused = oos_notify(url, "serve")
    current = oos_notify(url, "db", "current")
    commands = [oos_notify(url, "apikey", "list"), oos_notify(url, "user", "list")]

    for answer in (refused, *commands):
        assert answer.returncode == 2, answer.stderr
        assert "run `oos-notify db upgrade`" in answer.stderr and "Traceback" not in answer.stderr
    assert current.returncode == 1
    assert f"this version needs {migrate.head()}" in current.stdout
    engine = make_engine(url)
    assert migrate.state(engine).revision is None  # untouched
    engine.dispose()


def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    engine = make_engine(databases.url_for(tmp_path))
    create_schema(engine)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '0999'"))

    with pytest.raises(SchemaNotReady, match="0999, which this version of oos-notify does not"):
        migrate.prepare(engine, migrate_on_start=True)
    engine.dispose()


@databases.needs_postgresql
def test_a_start_that_reads_the_schema_as_another_process_commits_its_migration_starts(
    tmp_path: Path,
) -> None:
    """Two replicas started together on an empty database: the one that lost the race reads the
    schema while the other commits every table at once. It must see the database empty (and
    then find the migration done) or at head, never half of each."""
    url = databases.empty_url_for(tmp_path)
    engine, other = make_engine(url), make_engine(url)
    committed: list[str] = []

    @sa.event.listens_for(engine, "after_cursor_execute")
    def the_other_process_commits(*_: object) -> None:
        # after this start's first read of the schema, the other process's migration commits
        if not committed:
            committed.append(str(migrate.upgrade(other).after))

    assert migrate.prepare(engine, migrate_on_start=None) is None  # nothing left to do here
    assert committed == [migrate.head()]
    assert migrate.state(engine).at_head
    engine.dispose()
    other.dispose()


# --- migrating safely --------------------------------------------------------------------------


def test_a_failing_migration_leaves_nothing_of_itself_behind(tmp_path: Path) -> None:
    engine = make_engine(databases.empty_url_for(tmp_path))
    migrate.upgrade(engine, "0001")
    with engine.begin() as connection:  # takes a name 0002's index needs, on another table
        connection.execute(sa.text("CREATE INDEX ix_notifications_claimed_by ON events (type)"))

    with pytest.raises(sa.exc.DBAPIError):
        migrate.upgrade(engine)

    with engine.connect() as connection:
        assert migrate.state(engine).revision == "0001"
        inspector = sa.inspect(connection)
        assert "claimed_by" not in {c["name"] for c in inspector.get_columns("notifications")}
        assert "rate_buckets" not in inspector.get_table_names()
    engine.dispose()


def test_processes_migrating_together_migrate_once(tmp_path: Path) -> None:
    url = databases.empty_url_for(tmp_path)
    processes = [
        subprocess.Popen(
            [OOS_NOTIFY, "db", "upgrade"],
            env={**os.environ, "OOS_NOTIFY_DATABASE_URL": url, "OOS_NOTIFY_LOG_FORMAT": "text"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in processes]

    assert [code for code, _, _ in results] == [0] * 4, results
    said = sorted("upgraded from none" in out for _, out, _ in results)
    assert said == [False, False, False, True], results  # one migrated; three found it done
    engine = make_engine(url)
    assert migrate.state(engine).at_head
    engine.dispose()
