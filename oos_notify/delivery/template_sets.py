"""Template sets in the database: an incident's messages keep the wording it opened with.

At start-up each center's templates (its overrides resolved) are hashed and stored once per
version; an incident records its center's version, and the dispatcher renders from that stored
set, so a template edited later changes new incidents only.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session

from oos_notify.agreements.config import Agreements
from oos_notify.delivery.messaging import center_ids
from oos_notify.delivery.rendering import Renderer, SnapshotSource, TemplateSet
from oos_notify.store.db import transaction
from oos_notify.store.models import StoredTemplateSet


def record(
    engine: Engine, renderer: Renderer, agreements: Agreements, now: datetime
) -> dict[str, str]:
    """Store every center's current template set (once per version); return each center's."""
    versions: dict[str, str] = {}
    with transaction(engine) as session:
        for center_id in agreements.center_ids():
            snapshot = renderer.snapshot(center_ids(agreements.effective(center_id)))
            if session.get(StoredTemplateSet, snapshot.version) is None:
                session.add(
                    StoredTemplateSet(
                        version=snapshot.version, files=dict(snapshot.files), created_at=now
                    )
                )
                session.flush()
            versions[center_id] = snapshot.version
    return versions


def source(engine: Engine) -> SnapshotSource:
    """How the renderer finds a stored set it has not loaded yet."""

    def find(version: str) -> TemplateSet | None:
        with Session(engine) as session:
            row = session.get(StoredTemplateSet, version)
            return TemplateSet(row.version, row.files) if row is not None else None

    return find
