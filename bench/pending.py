"""The fast loader for the timer measurement: many notifications pending, due over a window.

It writes through the service's own code: each incident is opened by ``events.ingest`` (the
function behind ``POST /v1/events``: validation, planning, outbox rows, audit trail) in large
transactions instead of one HTTP request each, with the clock of each call spread over the
window. Loading takes a while, so the window is placed afterwards: one UPDATE moves every
scheduled row by the same whole number of seconds, keeping the spacing ingest planned.
"""

from __future__ import annotations

import math
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.centers import FIRST_STEP_ROLES, release_failure
from bench.service import ROOT
from oos_notify import template_sets
from oos_notify.config_check import load_checked
from oos_notify.db import create_schema, make_engine, transaction
from oos_notify.events import EventIn, ingest
from oos_notify.settings import Settings

CHUNK = 1000
"""Incidents per transaction while loading."""


def load(
    database: Path, config_dir: Path, centers: list[str], notifications: int, window: float
) -> None:
    """Open enough incidents that ``notifications`` first notices fall due across ``window``
    seconds from the instant the loader started (use ``place`` to move them later)."""
    engine = make_engine(f"sqlite:///{database}")
    create_schema(engine)
    agreements, renderer = load_checked(config_dir, ROOT / "templates")
    mail_domain = Settings(_env_file=None).mail_domain
    incidents = notifications // len(FIRST_STEP_ROLES)
    base = datetime.now(UTC)
    versions = template_sets.record(engine, renderer, agreements, base)
    for first in range(0, incidents, CHUNK):
        with transaction(engine) as session:
            for number in range(first, min(first + CHUNK, incidents)):
                event = EventIn.model_validate(release_failure("TIMER", number, centers))
                at = base + timedelta(seconds=window * number / incidents)
                ingest(session, event, agreements, at, mail_domain, versions)
    engine.dispose()


def place(database: Path, start_in: float) -> float:
    """Move every scheduled row so the window opens ``start_in`` seconds from now; return that
    instant as ``time.time()``."""
    with sqlite3.connect(database) as db:
        (earliest,) = db.execute(
            "SELECT min(due_at) FROM notifications WHERE status = 'scheduled'"
        ).fetchone()
        shift = math.ceil(time.time() + start_in - stored_instant(earliest))
        # Whole seconds on the 'YYYY-MM-DD HH:MM:SS' part; the '.ffffff' part is kept as stored.
        db.execute(
            "UPDATE notifications SET due_at = "
            "strftime('%Y-%m-%d %H:%M:%S', due_at, ?) || substr(due_at, 20) "
            "WHERE status = 'scheduled'",
            (f"{shift:+d} seconds",),
        )
        return stored_instant(earliest) + shift


def stored_instant(value: str) -> float:
    """A UTC instant as the service stores it in SQLite, as ``time.time()`` would give it."""
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def first_notices(database: Path) -> dict[str, float]:
    """Message-ID to due instant of every first notice, as the service planned them."""
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT message_id, due_at FROM notifications WHERE kind = 'escalation' AND level = 0"
        ).fetchall()
    return {message_id: stored_instant(due_at) for message_id, due_at in rows}
