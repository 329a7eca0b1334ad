"""The messages as the mail server accepted them: kept compressed when a send is recorded, read
back byte for byte for the console."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session

from oos_notify.store.models import SentMessage

_INSERT = SentMessage.__table__.insert()  # type: ignore[attr-defined]


def keep(session: Session, messages: Sequence[tuple[str, bytes]], now: datetime) -> None:
    """Keep each ``(notification id, message)`` accepted at ``now``, in one statement."""
    if not messages:
        return
    session.execute(
        _INSERT,
        [
            {
                "notification_id": notification_id,
                "sent_at": now,
                "size": len(data),
                # Level 1: a tenth larger than level 6 for a message, at half its CPU, which
                # was 4 % of what sending a message cost
                "compressed": zlib.compress(data, 1),
            }
            for notification_id, data in messages
        ],
    )


def read(session: Session, notification_id: str) -> bytes | None:
    """The message as it was sent, or None when none was kept (not sent, or sent before the
    service kept them)."""
    row = session.get(SentMessage, notification_id)
    return zlib.decompress(row.compressed) if row is not None else None
