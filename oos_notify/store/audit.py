"""The audit trail: an append-only, hash-chained entry for everything that happened.

Each entry carries a SHA-256 over its content and the hash of the entry before it, so an entry
edited, removed or moved after the fact breaks the chain at that entry, and ``verify`` names it.
The newest entry's number and hash are kept in one row, the chain head: every writer reads and
moves it inside its own transaction, so the chain stays one line however many write at once, and
entries removed from the end show too. A transaction collects its entries as it goes and chains
them only as it commits, after its other writes: on SQLite in a last few statements, on
PostgreSQL inside the database's commit (a trigger does it), so that writers of many processes
do not queue on the head for the length of each other's transactions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, event, func, select
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Session, SessionTransaction
from sqlmodel import col

from oos_notify.store.db import insert_missing
from oos_notify.store.models import AuditEntry, ServiceValue

CHAIN_HEAD = "audit_chain_head"
_PENDING = "oos_notify.audit.pending"
"""Where a session keeps the entries its transaction has recorded and not yet chained."""
GENESIS_HASH = "0" * 64
"""What the first entry names as the hash before it."""

_INSERT = AuditEntry.__table__.insert()  # type: ignore[attr-defined]
"""A Core insert, compiled once: the trail grows on every request's hot path."""
PENDING_NUMBERS = "audit_entries_pending_seq"
"""The PostgreSQL sequence of provisional entry numbers (negated), until the trigger chains them."""
_INSERT_PENDING = _INSERT.values(seq=-func.nextval(PENDING_NUMBERS))

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
    return _link(prev_hash, _content(at, action, actor, incident_id, notification_id, detail))


def _content(
    at: datetime,
    action: str,
    actor: str,
    incident_id: str | None,
    notification_id: str | None,
    detail: Mapping[str, Any],
) -> str:
    """The canonical JSON array an entry's hash covers, ``[prev_hash, at, action, actor,
    incident_id, notification_id, detail]``, without its opening bracket and first element:
    the hash before it is hexadecimal, so ``_link`` can put it in front as plain text (and so can
    PostgreSQL, which chains the entries on that database)."""
    fields = [at.astimezone(UTC).isoformat(), action, actor, incident_id, notification_id, detail]
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)[1:]


def _link(prev_hash: str, content: str) -> str:
    return hashlib.sha256(f'["{prev_hash}",{content}'.encode()).hexdigest()


def _head_value(seq: int, digest: str) -> str:
    return f"{seq} {digest}"


def _parse_head(value: str) -> tuple[int, str]:
    seq, _, digest = value.partition(" ")
    return int(seq), digest


def start_chain(connection: Connection) -> None:
    """Create the chain head of an empty trail, once: processes starting together may all try."""
    insert_missing(
        connection, _HEAD_ROW, [{"name": CHAIN_HEAD, "value": _head_value(0, GENESIS_HASH)}]
    )


@dataclass
class _Pending:
    """The entries one transaction has recorded, in order, to be chained as it commits."""

    transaction: SessionTransaction
    entries: list[dict[str, Any]] = field(default_factory=list)


@event.listens_for(Session, "before_commit")
def _write_entries(session: Session) -> None:
    """Write the transaction's entries, chained to the head, just before it commits; its other
    changes are flushed first, so the head's lock is the last one the transaction takes.

    On SQLite (one writer at a time anyway) they are chained here: the head is read, the entries
    hashed and written, the head moved. On PostgreSQL, where writers of many processes queue on
    the head, each entry is written with its content and a provisional negative number, and a
    trigger (migration 0003) chains it to the head while the transaction commits: the head is
    locked inside the database's commit only, never across a round trip to a process busy with
    other requests."""
    pending = session.info.pop(_PENDING, None)
    if not isinstance(pending, _Pending) or not pending.entries:
        return
    if pending.transaction is not session.get_transaction():
        return
    session.flush()
    contents = [
        _content(
            e["at"], e["action"], e["actor"], e["incident_id"], e["notification_id"], e["detail"]
        )
        for e in pending.entries
    ]
    if session.get_bind().dialect.name == "postgresql":
        for entry, content in zip(pending.entries, contents, strict=True):
            entry["prev_hash"], entry["entry_hash"] = "", content
        session.execute(_INSERT_PENDING, pending.entries)
        return
    seq, digest = _parse_head(session.execute(_READ_HEAD).scalar_one())
    for entry, content in zip(pending.entries, contents, strict=True):
        seq += 1
        entry["seq"], entry["prev_hash"] = seq, digest
        digest = entry["entry_hash"] = _link(digest, content)
    session.execute(_INSERT, pending.entries)
    session.execute(_MOVE_HEAD, {"head_value": _head_value(seq, digest)})


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

    Entries are numbered and chained when the transaction commits, in the order it recorded
    them, after the entries of every transaction that committed before it; a rollback discards
    them all.
    """
    transaction = session.get_transaction() or session.begin()
    pending = session.info.get(_PENDING)
    if not isinstance(pending, _Pending) or pending.transaction is not transaction:
        pending = session.info[_PENDING] = _Pending(transaction)
    pending.entries.append(
        {
            "at": at,
            "action": action,
            "actor": actor,
            "incident_id": incident_id,
            "notification_id": notification_id,
            "detail": detail,
        }
    )


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
