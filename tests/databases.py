"""The database the suite runs on: one switch, read once.

    python -m pytest                                              # SQLite files (the default)
    OOS_TEST_DATABASE=postgresql OOS_TEST_PG_URL=postgresql+psycopg://oos:oos@127.0.0.1:55432/oos \
        python -m pytest                                          # PostgreSQL

Tests name their database by a directory, as they always have (``url_for(tmp_path)``): on SQLite
it is the file ``oos.db`` in that directory; on PostgreSQL it is a database of its own on the
server, cloned on first use from a template this process migrated once, and dropped after the
test (``conftest.py``). Several services, restarts and ``oos-notify`` subprocesses of one test
thus share one database, and no two tests ever do. The role in ``OOS_TEST_PG_URL`` needs
CREATEDB, and preferably pg_signal_backend, so that dropping a test's database may end an
autovacuum worker on it instead of waiting for it (``.ci/start-postgres.sh`` makes such a role).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, inspect, make_url, text
from sqlalchemy.exc import ProgrammingError

from oos_notify.store.db import create_schema, make_engine

KIND = os.environ.get("OOS_TEST_DATABASE", "sqlite")
PG_URL = os.environ.get("OOS_TEST_PG_URL", "")
if KIND not in ("sqlite", "postgresql"):
    raise RuntimeError(f"OOS_TEST_DATABASE={KIND!r}: use sqlite or postgresql")
if KIND == "postgresql" and not PG_URL:
    raise RuntimeError(
        "OOS_TEST_DATABASE=postgresql needs OOS_TEST_PG_URL (see .ci/start-postgres.sh)"
    )

ON_POSTGRESQL = KIND == "postgresql"
needs_postgresql = pytest.mark.skipif(
    not ON_POSTGRESQL, reason="PostgreSQL only: run with OOS_TEST_DATABASE=postgresql"
)


def sqlite_only(reason: str) -> pytest.MarkDecorator:
    """Skip on PostgreSQL, saying why the test has no PostgreSQL counterpart to run."""
    return pytest.mark.skipif(ON_POSTGRESQL, reason=f"SQLite only: {reason}")


_TEMPLATE = f"oos_template_{os.getpid()}"
_template_made = False
_created: list[str] = []
_admin: Engine | None = None


def url_for(directory: Path) -> str:
    """The database of ``directory``: on PostgreSQL made on first use at the migrations' head; on
    SQLite a file the service (or ``create_schema``) makes."""
    if not ON_POSTGRESQL:
        return f"sqlite:///{directory / 'oos.db'}"
    name = _name(directory)
    if name not in _created:
        _create(name, template=_template())
    return _url(name)


def unreachable_url() -> str:
    """A database of the kind under test that cannot be opened: no such folder, or no server."""
    if not ON_POSTGRESQL:
        return "sqlite:////nonexistent-folder/oos.db"
    return make_url(PG_URL).set(host="127.0.0.1", port=1).render_as_string(hide_password=False)


def empty_url_for(directory: Path) -> str:
    """A database with no tables at all, for the tests of migrating one."""
    if not ON_POSTGRESQL:
        return f"sqlite:///{directory / 'empty.db'}"
    name = _name(directory / "empty")
    if name not in _created:
        _create(name)
    return _url(name)


def untouched(url: str) -> bool:
    """Whether nothing was made in the database at ``url``: no SQLite file, no table on
    PostgreSQL (``empty_url_for`` makes the database itself, with nothing in it)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return not Path(parsed.database or "").exists()
    engine = create_engine(url)
    try:
        return inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def copy(source: Path, target: Path) -> str:
    """A private copy of ``source``'s database as ``target``'s (nothing may be connected to it)."""
    if not ON_POSTGRESQL:
        with (
            closing(sqlite3.connect(source / "oos.db")) as original,
            closing(sqlite3.connect(target / "oos.db")) as duplicate,
        ):
            original.backup(duplicate)
        return url_for(target)
    name = _name(target)
    _create(name, template=_name(source))
    return _url(name)


def created() -> int:
    """A mark for ``drop_since``: how many databases this process has made so far."""
    return len(_created)


def drop_since(mark: int) -> None:
    """Drop the databases made since ``mark`` (a leaked connection does not stop it)."""
    while len(_created) > mark:
        _drop(_created.pop())


def _drop(name: str) -> None:
    """``FORCE`` ends the sessions still on the database, but a role without pg_signal_backend
    may not end an autovacuum worker that happens to be there: then wait for it to finish."""
    for attempt in range(50):
        try:
            _execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except ProgrammingError as error:
            if not isinstance(error.orig, psycopg.errors.InsufficientPrivilege) or attempt == 49:
                raise
            time.sleep(0.1)


def _name(directory: Path) -> str:
    return "oos_t_" + hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:24]


def _url(name: str) -> str:
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def _template() -> str:
    global _template_made
    if not _template_made:
        _execute(f'DROP DATABASE IF EXISTS "{_TEMPLATE}" WITH (FORCE)')
        _execute(f'CREATE DATABASE "{_TEMPLATE}"')
        atexit.register(_execute, f'DROP DATABASE IF EXISTS "{_TEMPLATE}" WITH (FORCE)')
        engine = make_engine(_url(_TEMPLATE))
        create_schema(engine)
        engine.dispose()  # a template may have no connection open when it is cloned
        _template_made = True
    return _TEMPLATE


def _create(name: str, template: str | None = None) -> None:
    source = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
    _execute(f'CREATE DATABASE "{name}"{source}')
    if not _created:
        atexit.register(drop_since, 0)
    _created.append(name)


def _execute(statement: str) -> None:
    global _admin
    if _admin is None:
        _admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with _admin.connect() as connection:
        connection.execute(text(statement))
