"""Template sets in the database: an incident's messages keep the wording it opened with.

At start-up each center's templates (its overrides resolved) are hashed and stored once per
version; an incident records its center's version, and the dispatcher renders from that stored
set, so a template edited later changes new incidents only.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from oos_notify.agreements.config import Agreements
from oos_notify.delivery.messaging import center_ids
from oos_notify.delivery.rendering import Renderer, SnapshotSource, TemplateSet
from oos_notify.store.db import insert_missing, transaction
from oos_notify.store.models import StoredTemplateSet


def record(
    engine: Engine, renderer: Renderer, agreements: Agreements, now: datetime
) -> dict[str, str]:
    """Store every center's current template set (once per version); return each center's.
    Centers whose overrides resolve to the same folders share one set, read once: reading and
    hashing every file again for each of a hundred sites took most of a restart."""
    versions: dict[str, str] = {}
    sets: dict[str, dict[str, object]] = {}
    by_folders: dict[tuple[Path, ...], TemplateSet] = {}
    for center_id in agreements.center_ids():
        chain = center_ids(agreements.effective(center_id))
        folders = tuple(renderer.search_path(chain))
        snapshot = by_folders.get(folders)
        if snapshot is None:
            snapshot = by_folders[folders] = renderer.snapshot(chain)
        versions[center_id] = snapshot.version
        sets[snapshot.version] = {
            "version": snapshot.version,
            "files": dict(snapshot.files),
            "created_at": now,
        }
    with transaction(engine) as session:
        insert_missing(session, _SETS, list(sets.values()))
    return versions


_SETS = StoredTemplateSet.__table__  # type: ignore[attr-defined]


def source(engine: Engine) -> SnapshotSource:
    """How the renderer finds a stored set it has not loaded yet."""

    def find(version: str) -> TemplateSet | None:
        with Session(engine) as session:
            row = session.get(StoredTemplateSet, version)
            return TemplateSet(row.version, row.files) if row is not None else None

    return find
