"""Schema migrations with Alembic, run in-process: no alembic.ini, no alembic command at run time.

Every schema change is a numbered script in ``migrations/versions``; ``0001`` is the schema of
release 5d7c067, the last one whose tables came from ``create_all``, so a database it made is
stamped with 0001 and upgraded from there. Migrating takes a lock (an advisory lock on
PostgreSQL, a file lock beside a SQLite file), so processes started together migrate once: one
runs the scripts, the others wait and then find the schema at head.

Finding that a database is already at head, which every start-up and every ``db upgrade`` does,
is one query and a look at the scripts' file names: Alembic and the models are imported only
when there is something to migrate (importing them took longer than the rest of a start-up).
"""

from __future__ import annotations

import ast
import fcntl
import logging
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import OperationalError

from oos_notify.store.db import SchemaNotReady

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"
BASELINE = "0001"
"""The revision whose schema is what ``create_all`` made before migrations existed."""
LOCK_KEY = 7_301_942_117_001
"""The ``pg_advisory_lock`` key of "migrating": a fixed number the service uses for nothing else."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema is, against the scripts this code ships."""

    revision: str | None
    """What ``alembic_version`` says; None when the table is missing."""
    has_tables: bool
    """Whether any of the service's tables exist (they do where a revision is recorded)."""
    head: str

    @property
    def at_head(self) -> bool:
        return self.revision == self.head

    @property
    def empty(self) -> bool:
        return self.revision is None and not self.has_tables

    def describe(self) -> str:
        if self.empty:
            return "has no tables"
        if self.revision is None:
            return "was made before migrations existed (release 5d7c067 or earlier)"
        return f"is at revision {self.revision}"


def config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    cfg.attributes["connection"] = connection
    return cfg


def scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config())


def _script_files() -> dict[str, Path]:
    """Each revision's script, by the number its file name starts with: the scripts are one
    numbered line, each named ``<revision>_<slug>.py`` (tests/test_migrations.py holds them to
    it), so the names say which revisions exist and which is the newest without loading them."""
    return {
        path.name.partition("_")[0]: path for path in (MIGRATIONS / "versions").glob("[0-9]*_*.py")
    }


def head() -> str:
    """The newest revision this code ships."""
    return max(_script_files(), default="")


def state(engine: Engine) -> SchemaState:
    """The schema as one moment saw it. On PostgreSQL its few reads share one snapshot: read
    each as of its own moment, a start that read "no version table" and then "tables" while
    another process committed its migration in between took the database for one made before
    migrations, and refused to start."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        return _state(connection)


def _state(connection: Connection) -> SchemaState:
    revision = None
    if inspect(connection).has_table(VERSION_TABLE):
        revision = connection.execute(
            text(f"SELECT version_num FROM {VERSION_TABLE}")
        ).scalar_one_or_none()
    if revision is not None:
        return SchemaState(revision, True, head())
    from sqlmodel import SQLModel

    from oos_notify.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)

    tables = set(inspect(connection).get_table_names())
    return SchemaState(None, bool(tables & set(SQLModel.metadata.tables)), head())


def known(revision: str) -> bool:
    return revision in _script_files()


def prepare(engine: Engine, migrate_on_start: bool | None) -> str | None:
    """Make the schema the one this code needs at start-up, or raise SchemaNotReady saying what
    to run. ``migrate_on_start`` None means: create the tables of an empty database, and upgrade
    a SQLite file (one process owns it) but never a shared PostgreSQL database, whose upgrade an
    operator runs with ``oos-notify db upgrade`` after a backup. Returns what was done, if any."""
    found = state(engine)
    if found.at_head:
        return None
    if found.revision is not None and not known(found.revision):
        raise SchemaNotReady(
            f"the database's schema is at revision {found.revision}, which this version of "
            f"oos-notify does not know (it needs {found.head}): a newer version upgraded it; run "
            "that version, or restore the backup taken before the upgrade"
        )
    allowed = migrate_on_start
    if allowed is None:
        allowed = found.empty or engine.dialect.name == "sqlite"
    if not allowed:
        raise SchemaNotReady(
            f"the database {found.describe()}; this version needs revision {found.head}. "
            "Back it up, then run `oos-notify db upgrade` (once, from any one machine) and start "
            "the service again"
        )
    done = upgrade(engine)
    return f"schema upgraded from {done.before or 'nothing'} to {done.after}" if done else None


@dataclass(frozen=True)
class Upgraded:
    """The revisions before and after an upgrade, as the process holding the lock found them."""

    before: str | None
    after: str | None

    def __bool__(self) -> bool:
        return self.before != self.after


def upgrade(engine: Engine, revision: str = "head") -> Upgraded:
    """Bring the database to ``revision``; safe to call from many processes at once: the ones
    that wait for the lock find the work done. A database already there is left as it is,
    without taking the lock."""
    try:
        found = state(engine).revision
    except OperationalError:
        # Another process is migrating this SQLite file and holds its write lock: wait for it
        # below, like the lock's other waiters, and find the work done.
        found = None
    if found is not None and found == (head() if revision == "head" else revision):
        return Upgraded(found, found)
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            # A session lock: it outlives the migrations' own commits, and PostgreSQL frees it
            # if this process dies holding it.
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
            connection.commit()
            try:
                return _upgrade_on(connection, revision)
            finally:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
                connection.commit()
    if engine.dialect.name == "sqlite":
        migrator = _sqlite_migration_engine(engine)
        try:
            with _file_lock(engine), migrator.connect() as connection:
                return _upgrade_on(connection, revision)
        finally:
            if migrator is not engine:
                migrator.dispose()
    raise SchemaNotReady(f"migrations support SQLite and PostgreSQL, not {engine.dialect.name}")


def _upgrade_on(connection: Connection, revision: str) -> Upgraded:
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    cfg = config(connection)
    found = _state(connection)
    connection.rollback()  # the inspection began a transaction; Alembic must begin its own
    if found.revision is None and found.has_tables:
        log.info("database made before migrations: stamped as revision %s", BASELINE)
        command.stamp(cfg, BASELINE)
    command.upgrade(cfg, revision)
    after = MigrationContext.configure(connection).get_current_revision()
    connection.rollback()
    if after != found.revision:
        log.info("migrated the schema from %s to %s", found.revision or "nothing", after)
    return Upgraded(found.revision, after)


@contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """One migrator per SQLite file at a time, across the processes of this machine."""
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sqlite_migration_engine(engine: Engine) -> Engine:
    """An engine whose transactions are real for DDL too: pysqlite runs DDL outside any
    transaction, so a migration that failed halfway would leave half of itself behind. Here
    Alembic's transaction is a ``BEGIN IMMEDIATE … COMMIT`` that rolls back whole."""
    if engine.url.database in (None, "", ":memory:"):
        return engine  # a second engine would open a second, empty in-memory database
    migrator = create_engine(engine.url, connect_args={"timeout": 30})

    @event.listens_for(migrator, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # stop pysqlite's own BEGIN/COMMIT handling
        dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # a batch copy-and-move needs it

    @event.listens_for(migrator, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return migrator


def drift(engine: Engine) -> list[Any]:
    """What autogenerating a revision would write now: [] when the models and the migrations
    describe the same schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    from oos_notify.store.migrations_options import context_options

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts=context_options(connection))
        return list(compare_metadata(context, SQLModel.metadata))


def revision(message: str, url: str | None = None) -> Path:
    """Developer command: write the next numbered script from what the models changed, found by
    comparing them with a scratch database (SQLite unless ``url``) migrated to head."""
    from alembic import command

    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(url or f"sqlite:///{scratch}/scratch.db")
        try:
            upgrade(engine)
            next_id = f"{int(head() or 0) + 1:04d}"
            with engine.connect() as connection:
                written = command.revision(
                    config(connection), message=message, autogenerate=True, rev_id=next_id
                )
        finally:
            engine.dispose()
    assert written is not None and not isinstance(written, list)
    path = Path(written.path)
    kept = [line for line in path.read_text().splitlines() if not _BOILERPLATE.match(line)]
    path.write_text("\n".join(kept) + "\n")
    for tool in (["format", "--quiet"], ["check", "--fix", "--quiet"]):
        subprocess.run([sys.executable, "-m", "ruff", *tool, str(path)], check=False)
    return path


_BOILERPLATE = re.compile(r"\s*# ### (commands auto generated by Alembic|end Alembic commands)")


def describe(revision_id: str | None) -> str:
    """A revision and its message (its script's first paragraph, as Alembic shows it), as
    ``db current`` prints it."""
    if revision_id is None:
        return "none"
    path = _script_files().get(revision_id)
    if path is None:
        return f"{revision_id} (unknown)"
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    summary = doc.strip().split("\n\n")[0]
    return f"{revision_id} ({summary})"
