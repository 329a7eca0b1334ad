"""The fast loader for the timer measurement: many notifications pending, due over a window.

Two steps, both timed together as the load:

1. A sample of incidents (``SAMPLE``, 1,000, unless told otherwise; taking the centers in turn
   as the benchmark's events do) is opened through the service's own code: ``events.ingest``, the
   function behind ``POST /v1/events`` (validation, severity, planning, outbox rows, audit
   trail), in large transactions instead of one HTTP request each, with the clock of each call
   spread over the window.
2. The sample is replicated with SQL until ``notifications`` first notices exist. Copy ``n``
   (for ``n`` from the sample size up to the number of incidents) repeats sample incident
   ``n`` modulo the sample size at the same center, and its clock moves so the first notices of
   all incidents fall evenly over the window, exactly where ingesting incident ``n`` would have
   put them. What is copied, per copy:

   - the ``incidents`` row, with a fresh ``inc_`` id and the incident ref, lot number and chain
     of identity the benchmark's event ``n`` would carry (``OOS-TIMER-n``, ``LOT-n``,
     ``COI-TIMER-n``); every other column as the sample's (agreement snapshot, severity,
     template version, key dates...), the instants (opened, updated, notify deadline) moved;
   - every ``notifications`` row of the sample incident (the four first notices and the backup
     coordinator's reminder), with fresh ``ntf_`` ids, the copy's incident id, and a
     Message-ID made from the new id as ``outbox.schedule`` makes it; due and created instants
     moved by the same amount. The reminder's due time is moved by plain seconds, so unlike a
     planned one it may fall outside the center's business hours; it is due hours after the
     window and is never sent during the measurement.

   Not copied: the ``events`` rows (the service does not read them to dispatch, and event ids
   of copies were never received) and the ``audit_entries`` rows ("incident_opened",
   "notification_scheduled"...): the audit trail holds the sample's only, so it does not
   describe the copies. Nothing the dispatcher reads is missing: it reads the notification,
   its incident and the stored template set.

Loading takes a few seconds, so the window is placed afterwards: one UPDATE moves every
scheduled row by the same whole number of seconds, keeping the spacing.
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.centers import FIRST_STEP_ROLES, release_failure
from bench.service import ROOT
from oos_notify.agreements.config import load_agreements
from oos_notify.delivery import template_sets
from oos_notify.delivery.rendering import Renderer
from oos_notify.ids import new_id
from oos_notify.incidents.events import EventIn, ingest
from oos_notify.settings import Settings
from oos_notify.store.db import create_schema, make_engine, transaction

CHUNK = 1000
"""Incidents per transaction while ingesting the sample."""
SAMPLE = 1000
"""Incidents opened through ``events.ingest``; the rest are SQL copies of them. A multiple of
the number of centers keeps each copy at the center its event number would go to."""
RUN = "TIMER"
"""The run name in the incident refs, as ``release_failure(RUN, n, ...)`` makes them."""


@dataclass(frozen=True)
class Loaded:
    ingested: int
    """Incidents opened through ``events.ingest``."""
    copied: int
    """Incidents copied from them by SQL."""
    sample_message_ids: frozenset[str]
    """The Message-IDs of the ingested incidents' notifications (the rest are copies')."""


def load(
    database: Path,
    config_dir: Path,
    centers: list[str],
    notifications: int,
    window: float,
    sample: int = SAMPLE,
) -> Loaded:
    """Make ``notifications`` first notices (four per incident) fall due evenly across
    ``window`` seconds from the instant the loader started (use ``place`` to move them later),
    ``sample`` incidents of them opened through ``ingest``."""
    engine = make_engine(f"sqlite:///{database}")
    create_schema(engine)
    # Not load_checked: rendering every template for every center takes seconds, and the
    # service does it again when it starts.
    agreements, renderer = load_agreements(config_dir), Renderer(ROOT / "templates")
    mail_domain = Settings(_env_file=None).mail_domain
    incidents = notifications // len(FIRST_STEP_ROLES)
    sample = min(sample, incidents)
    base = datetime.now(UTC)
    versions = template_sets.record(engine, renderer, agreements, base)
    for first in range(0, sample, CHUNK):
        with transaction(engine) as session:
            for number in range(first, min(first + CHUNK, sample)):
                event = EventIn.model_validate(release_failure(RUN, number, centers))
                at = base + timedelta(seconds=window * number / incidents)
                ingest(session, event, agreements, at, mail_domain, versions)
    engine.dispose()
    with sqlite3.connect(database) as db:
        (sample_ids,) = zip(*db.execute("SELECT message_id FROM notifications"), strict=True)
        _copy(db, sample, incidents, window, mail_domain)
    return Loaded(sample, incidents - sample, frozenset(sample_ids))


def _copy(
    db: sqlite3.Connection, sample: int, incidents: int, window: float, mail_domain: str
) -> None:
    """Copies ``sample`` to ``incidents - 1`` of the sample's incidents (see the module's
    docstring), in one transaction."""
    db.create_function("moved", 2, _moved, deterministic=True)
    sources = dict(
        db.execute(
            "SELECT CAST(substr(incident_ref, ?) AS INTEGER), id FROM incidents",
            (len(f"OOS-{RUN}-") + 1,),
        )
    )
    assert sorted(sources) == list(range(sample)), "the sample is not OOS-TIMER-0..n"
    notifications_of: dict[str, list[str]] = {}
    for notification_id, incident_id in db.execute("SELECT id, incident_id FROM notifications"):
        notifications_of.setdefault(incident_id, []).append(notification_id)
    incident_copies: list[tuple[str, str, int, int]] = []
    notification_copies: list[tuple[str, str, str, int]] = []
    for number in range(sample, incidents):
        source = sources[number % sample]
        # Ingest put sample k at window * k / incidents; copy n goes where n would have gone.
        shift = round(window * (number - number % sample) / incidents * 1_000_000)
        incident_id = new_id("inc")
        incident_copies.append((incident_id, source, number, shift))
        notification_copies.extend(
            (new_id("ntf"), notification_id, incident_id, shift)
            for notification_id in notifications_of[source]
        )
    db.execute("CREATE TEMP TABLE incident_copies (id, source, number, shift)")
    db.execute("CREATE TEMP TABLE notification_copies (id, source, incident_id, shift)")
    db.executemany("INSERT INTO incident_copies VALUES (?, ?, ?, ?)", incident_copies)
    db.executemany("INSERT INTO notification_copies VALUES (?, ?, ?, ?)", notification_copies)
    incident_columns = _columns(db, "incidents")
    replaced = {
        "id": "c.id",
        "incident_ref": f"'OOS-{RUN}-' || c.number",
        "lot_number": "'LOT-' || c.number",
        "chain_of_identity": f"'COI-{RUN}-' || c.number",
        "opened_at": "moved(i.opened_at, c.shift)",
        "updated_at": "moved(i.updated_at, c.shift)",
        "notify_deadline": "moved(i.notify_deadline, c.shift)",
    }
    db.execute(
        f"INSERT INTO incidents ({', '.join(incident_columns)}) "
        f"SELECT {', '.join(replaced.get(c, f'i.{c}') for c in incident_columns)} "
        "FROM incident_copies c JOIN incidents i ON i.id = c.source"
    )
    notification_columns = _columns(db, "notifications")
    replaced = {
        "id": "c.id",
        "incident_id": "c.incident_id",
        "message_id": f"'<' || lower(c.id) || '@{mail_domain}>'",
        "due_at": "moved(n.due_at, c.shift)",
        "created_at": "moved(n.created_at, c.shift)",
    }
    db.execute(
        f"INSERT INTO notifications ({', '.join(notification_columns)}) "
        f"SELECT {', '.join(replaced.get(c, f'n.{c}') for c in notification_columns)} "
        "FROM notification_copies c JOIN notifications n ON n.id = c.source"
    )
    db.execute("DROP TABLE incident_copies")
    db.execute("DROP TABLE notification_copies")


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def _moved(stored: str | None, microseconds: int) -> str | None:
    """A stored instant moved by ``microseconds``, in the format SQLAlchemy stores it."""
    if stored is None:
        return None
    moved = datetime.fromisoformat(stored) + timedelta(microseconds=microseconds)
    return moved.strftime("%Y-%m-%d %H:%M:%S.%f")


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
