"""The audit trail: an append-only, hash-chained entry for everything that happened.

Each entry carries a SHA-256 over its content and the hash of the entry before it, so an entry
edited, removed or moved after the fact breaks the chain at that entry, and ``verify`` names it.
The newest entry's number and hash are kept in one row, the chain head: every writer reads and
moves it inside its own transaction, so the chain stays one line however many write at once, and
entries removed from the end show too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, event, select
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Session, SessionTransaction
from sqlmodel import col

from oos_notify.store.models import AuditEntry, ServiceValue

CHAIN_HEAD = "audit_chain_head"
_CHAIN_END = "oos_notify.audit.chain_end"
"""Where a session keeps the chain head its transaction has read and moved."""
GENESIS_HASH = "0" * 64
"""What the first entry names as the hash before it."""

_INSERT = AuditEntry.__table__.insert()  # type: ignore[attr-defined]
"""A Core insert, compiled once: the trail grows on every request's hot path."""

_HEAD_ROW = ServiceValue.__table__  # type: ignore[attr-defined]
"""Core statements on the table, not ORM ones: they run twice per writing transaction, and an
ORM update would first work out which loaded objects it changes."""

# The head is read by writing it (to itself): the write takes the head's row lock on PostgreSQL
# and the database's write lock on SQLite, held until commit, so a second writer waits here and
# then reads the head the first one moved. A plain read would not do: SQLite's driver reads
# outside the transaction, and PostgreSQL reads what was committed when the statement began.
_READ_HEAD = (
    _HEAD_ROW.update()
    .where(_HEAD_ROW.c.name == CHAIN_HEAD)
    .values(value=_HEAD_ROW.c.value)
    .returning(_HEAD_ROW.c.value)
)
_MOVE_HEAD = (
    _HEAD_ROW.update().where(_HEAD_ROW.c.name == CHAIN_HEAD).values(value=bindparam("head_value"))
)


def entry_hash(
    prev_hash: str,
    at: datetime,
    action: str,
    actor: str,
    incident_id: str | None,
    notification_id: str | None,
    detail: Mapping[str, Any],
) -> str:
    """The hash of an entry: its content in one canonical JSON form, chained to ``prev_hash``."""
    fields = [prev_hash, at.astimezone(UTC).isoformat(), action, actor, incident_id]
    content = json.dumps(
        [*fields, notification_id, detail],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(content.encode()).hexdigest()


def _head_value(seq: int, digest: str) -> str:
    return f"{seq} {digest}"


def _parse_head(value: str) -> tuple[int, str]:
    seq, _, digest = value.partition(" ")
    return int(seq), digest


def start_chain(connection: Connection) -> None:
    """Create the chain head of an empty trail, once, when the schema is created."""
    exists = connection.execute(
        select(col(ServiceValue.name)).where(col(ServiceValue.name) == CHAIN_HEAD)
    ).first()
    if exists is None:
        connection.execute(
            ServiceValue.__table__.insert(),  # type: ignore[attr-defined]
            {"name": CHAIN_HEAD, "value": _head_value(0, GENESIS_HASH)},
        )


@dataclass
class _ChainEnd:
    """The chain head as one transaction sees and moves it, read once per transaction, and the
    entries the transaction has chained to it so far, written together just before it commits."""

    transaction: SessionTransaction
    seq: int
    digest: str
    entries: list[dict[str, Any]] = field(default_factory=list)


def _chain_end(session: Session) -> _ChainEnd:
    cached = session.info.get(_CHAIN_END)
    if isinstance(cached, _ChainEnd) and cached.transaction is session.get_transaction():
        return cached
    value = session.execute(_READ_HEAD).scalar_one()
    transaction = session.get_transaction()
    assert transaction is not None  # the read began one
    seq, digest = _parse_head(value)
    end = session.info[_CHAIN_END] = _ChainEnd(transaction, seq, digest)
    return end


@event.listens_for(Session, "before_commit")
def _write_entries(session: Session) -> None:
    """Write the transaction's entries in one statement and move the chain head past them, just
    before the transaction commits: one round trip for the trail instead of one per entry."""
    end = session.info.pop(_CHAIN_END, None)
    if isinstance(end, _ChainEnd) and end.entries and end.transaction is session.get_transaction():
        session.execute(_INSERT, end.entries)
        session.execute(_MOVE_HEAD, {"head_value": _head_value(end.seq, end.digest)})


def record(
    session: Session,
    at: datetime,
    action: str,
    actor: str,
    *,
    incident_id: str | None = None,
    notification_id: str | None = None,
    **detail: Any,
) -> None:
    """Append an entry in the caller's transaction, so the trail and the change commit together.

    Numbered and chained now, so entries are numbered in the order things happened; written
    with the transaction's other entries when it commits (a rollback discards them all).
    """
    end = _chain_end(session)
    digest = entry_hash(end.digest, at, action, actor, incident_id, notification_id, detail)
    end.entries.append(
        {
            "seq": end.seq + 1,
            "at": at,
            "action": action,
            "actor": actor,
            "incident_id": incident_id,
            "notification_id": notification_id,
            "detail": detail,
            "prev_hash": end.digest,
            "entry_hash": digest,
        }
    )
    end.seq, end.digest = end.seq + 1, digest


def head(session: Session) -> tuple[int, str]:
    """The chain head as committed: the newest entry's number and hash."""
    value = session.execute(
        select(col(ServiceValue.value)).where(col(ServiceValue.name) == CHAIN_HEAD)
    ).scalar_one()
    return _parse_head(value)


@dataclass(frozen=True)
class ChainReport:
    """What ``verify`` found: how many entries it checked and, if any, the first broken one."""

    entries: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


def verify(session: Session, batch_size: int = 1000) -> ChainReport:
    """Walk the whole trail in order and check every link; stop at the first broken one."""
    head = session.execute(
        select(col(ServiceValue.value)).where(col(ServiceValue.name) == CHAIN_HEAD)
    ).scalar_one_or_none()
    try:
        head_seq, head_hash = _parse_head(head or "")
    except ValueError:
        return ChainReport(0, 0, GENESIS_HASH, None, "the chain head is missing or unreadable")
    count, last_seq, last_hash = 0, 0, GENESIS_HASH
    for row in _entries(session, batch_size):
        if isinstance(row, int):
            unreadable = "it cannot be read: it was changed after it was written"
            return ChainReport(count, head_seq, head_hash, row, unreadable)
        problem = _link_problem(row, last_seq, last_hash)
        if problem is not None:
            return ChainReport(count, head_seq, head_hash, row.seq, problem)
        count, last_seq, last_hash = count + 1, row.seq, row.entry_hash
    if (last_seq, last_hash) != (head_seq, head_hash):
        return ChainReport(
            count,
            head_seq,
            head_hash,
            last_seq,
            f"the chain head is entry {head_seq}, but the trail ends at entry {last_seq}: "
            "entries at the end were removed, or the head was changed",
        )
    return ChainReport(count, head_seq, head_hash)


_ENTRIES = AuditEntry.__table__  # type: ignore[attr-defined]


def _entries(session: Session, batch_size: int) -> Iterator[Row[Any] | int]:
    """Every entry in order, a batch at a time; an entry that cannot be read, as its number."""
    number = _ENTRIES.c.seq
    last = 0
    while (
        seqs := session.execute(
            select(number).where(number > last).order_by(number).limit(batch_size)
        )
        .scalars()
        .all()
    ):
        try:
            batch: Sequence[Row[Any] | int] = session.execute(
                select(_ENTRIES).where(number.between(seqs[0], seqs[-1])).order_by(number)
            ).all()
        except (ValueError, TypeError):
            batch = [_entry(session, seq) for seq in seqs]
        yield from batch
        last = seqs[-1]


def _entry(session: Session, seq: int) -> Row[Any] | int:
    try:
        return session.execute(select(_ENTRIES).where(_ENTRIES.c.seq == seq)).one()
    except (ValueError, TypeError):
        return seq


def recomputed_hash(entry: Any) -> str:
    """The hash a stored entry's content and link call for (a row or an AuditEntry)."""
    return entry_hash(
        entry.prev_hash,
        entry.at,
        entry.action,
        entry.actor,
        entry.incident_id,
        entry.notification_id,
        entry.detail,
    )


def _link_problem(row: Any, last_seq: int, last_hash: str) -> str | None:
    """Why an entry is not the intact successor of the last good one, or None."""
    if recomputed_hash(row) != row.entry_hash:
        return "its content does not match its hash: it was changed after it was written"
    if row.prev_hash != last_hash:
        before = f"entry {last_seq}" if last_seq else "the start of the trail"
        return (
            f"it does not follow {before}: an entry between them was removed, "
            "or entries were reordered"
        )
    return None
