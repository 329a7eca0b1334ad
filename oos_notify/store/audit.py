"""The audit trail: an append-only, hash-chained entry for everything that happened.

Each entry carries a SHA-256 over its content, its number, and the hash of the entry before it
in its chain, so an entry edited, removed, renumbered or moved after the fact breaks its chain at
that entry, and ``verify`` names it. Each chain's newest entry (number and hash) is kept in a row
of its own, the chain's head, so entries removed from the end of a chain show too.

The trail is ``CHAINS`` chains side by side: each writing transaction appends all of its entries
to one of them, chosen at random, and locks that chain's head only, so writers of many processes
seldom wait for each other. The chains all start from the end of the single chain the service
wrote before migration 0004 (still checked, never extended). Entries are numbered in one
sequence across all chains, and the number is part of each hash. ``verify`` checks every chain,
and gives one digest over every chain's newest entry as of any entry number: an auditor who
records the digest with the number can later have the same digest recomputed, and a rewrite of
anything up to that number shows as a different one.

A transaction collects its entries as it goes and chains them only as it commits, after its other
writes: on SQLite in a last few statements, on PostgreSQL inside the database's commit (a trigger
does it, migrations 0003 and 0004), so that no writer holds a head across a round trip to a
process busy with other requests.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, event, func, select
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Session, SessionTransaction

from oos_notify.store import passkeys, signatures  # noqa: F401 (passkeys registers its check)
from oos_notify.store.db import insert_missing
from oos_notify.store.models import AuditEntry, ServiceValue

CHAIN_HEAD = "audit_chain_head"
"""The head of the single chain of the entries written before migration 0004."""
CHAINS = 64
"""How many chains the trail's entries are spread over, side by side: enough that writers
committing at the same moment seldom pick the same one. It may grow (the heads of new chains are
made at start-up), never shrink: entries of a chain beyond it would belong to none."""
GENESIS_HASH = "0" * 64
"""What the first entry of the first chain names as the hash before it."""
_PENDING = "oos_notify.audit.pending"
"""Where a session keeps the entries its transaction has recorded and not yet chained."""


def chain_head(chain: int) -> str:
    """The ``service_values`` row that holds a chain's head."""
    return f"{CHAIN_HEAD}/{chain}"


_ENTRIES = AuditEntry.__table__  # type: ignore[attr-defined]
_INSERT = _ENTRIES.insert()
"""A Core insert, compiled once: the trail grows on every request's hot path."""
PENDING_NUMBERS = "audit_entries_pending_seq"
"""The PostgreSQL sequence of provisional entry numbers (negated), until the trigger chains them."""
_INSERT_PENDING = _INSERT.values(seq=-func.nextval(PENDING_NUMBERS))

_HEAD_ROW = ServiceValue.__table__  # type: ignore[attr-defined]
"""Core statements on the table, not ORM ones: they run on every writing transaction, and an
ORM update would first work out which loaded objects it changes."""

# A head is read by writing it (to itself): the write takes SQLite's write lock, held until
# commit, so a second writer waits here and then reads the head the first one moved. A plain
# read would not do: SQLite's driver reads outside the transaction.
_READ_HEAD = (
    _HEAD_ROW.update()
    .where(_HEAD_ROW.c.name == bindparam("head_name"))
    .values(value=_HEAD_ROW.c.value)
    .returning(_HEAD_ROW.c.value)
)
_MOVE_HEAD = (
    _HEAD_ROW.update()
    .where(_HEAD_ROW.c.name == bindparam("head_name"))
    .values(value=bindparam("head_value"))
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
    """The hash of an entry of the chain written before migration 0004: its content in one
    canonical JSON form, chained to ``prev_hash``."""
    return _link(prev_hash, _content(at, action, actor, incident_id, notification_id, detail))


def _content(
    at: datetime,
    action: str,
    actor: str,
    incident_id: str | None,
    notification_id: str | None,
    detail: Mapping[str, Any],
) -> str:
    """The end of the canonical JSON array an entry's hash covers: ``at, action, actor,
    incident_id, notification_id, detail`` and the closing bracket. What comes before it (the
    hash before the entry, and its number and chain) is plain text, so ``_link`` can put it in
    front (and so can PostgreSQL, which chains the entries on that database)."""
    fields = [at.astimezone(UTC).isoformat(), action, actor, incident_id, notification_id, detail]
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)[1:]


def _link(prev_hash: str, content: str, seq: int | None = None, chain: int | None = None) -> str:
    """SHA-256 of ``[prev_hash, seq, chain, at, …, detail]``, or of ``[prev_hash, at, …]`` for
    an entry of the chain written before migration 0004 (``chain`` None)."""
    numbered = "" if chain is None else f"{seq},{chain},"
    return hashlib.sha256(f'["{prev_hash}",{numbered}{content}'.encode()).hexdigest()


def _head_value(seq: int, digest: str) -> str:
    return f"{seq} {digest}"


def _parse_head(value: str) -> tuple[int, str]:
    seq, _, digest = value.partition(" ")
    return int(seq), digest


def start_chain(connection: Connection) -> None:
    """Create the heads of an empty trail, once: processes starting together may all try. The
    chains start from where the single chain of older versions ended (nowhere, on a new
    database)."""
    insert_missing(
        connection, _HEAD_ROW, [{"name": CHAIN_HEAD, "value": _head_value(0, GENESIS_HASH)}]
    )
    _, start = _parse_head(_head(connection, CHAIN_HEAD) or "")
    insert_missing(
        connection,
        _HEAD_ROW,
        [{"name": chain_head(c), "value": _head_value(0, start)} for c in range(CHAINS)],
    )


def _head(connection: Connection | Session, name: str) -> str | None:
    return connection.execute(
        select(_HEAD_ROW.c.value).where(_HEAD_ROW.c.name == name)
    ).scalar_one_or_none()


@dataclass
class _Pending:
    """The entries one transaction has recorded, in order, to be chained as it commits."""

    transaction: SessionTransaction
    entries: list[dict[str, Any]] = field(default_factory=list)


@event.listens_for(Session, "before_commit")
def _write_entries(session: Session) -> None:
    """Write the transaction's entries, chained to the head of one chain, just before it commits;
    its other changes are flushed first, so the head's lock is the last one it takes.

    On SQLite (one writer at a time anyway) they are chained here: the head is read, the entries
    numbered, hashed and written, the head moved. On PostgreSQL each entry is written with its
    content, its chain and a provisional negative number, and a trigger numbers and chains them
    while the transaction commits."""
    pending = session.info.pop(_PENDING, None)
    if not isinstance(pending, _Pending) or not pending.entries:
        return
    if pending.transaction is not session.get_transaction():
        return
    session.flush()
    chain = secrets.randbelow(CHAINS)
    contents = [
        _content(
            e["at"], e["action"], e["actor"], e["incident_id"], e["notification_id"], e["detail"]
        )
        for e in pending.entries
    ]
    if session.get_bind().dialect.name == "postgresql":
        for entry, content in zip(pending.entries, contents, strict=True):
            entry.update(chain=chain, prev_hash="", entry_hash=content)
        session.execute(_INSERT_PENDING, pending.entries)
        return
    head = {"head_name": chain_head(chain)}
    _, digest = _parse_head(session.execute(_READ_HEAD, head).scalar_one())
    seq = _last_seq(session)
    for entry, content in zip(pending.entries, contents, strict=True):
        seq += 1
        entry.update(seq=seq, chain=chain, prev_hash=digest)
        digest = entry["entry_hash"] = _link(digest, content, seq, chain)
    session.execute(_INSERT, pending.entries)
    session.execute(_MOVE_HEAD, {**head, "head_value": _head_value(seq, digest)})


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
    them; a rollback discards them all.
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


def heads(session: Session) -> str:
    """Every chain's head as committed, in one string: it changes whenever an entry is added
    anywhere in the trail, and costs one read of a few dozen short rows (what a page that
    follows the trail compares)."""
    rows = session.execute(
        select(_HEAD_ROW.c.name, _HEAD_ROW.c.value)
        .where(_HEAD_ROW.c.name.startswith(CHAIN_HEAD, autoescape=True))
        .order_by(_HEAD_ROW.c.name)
    ).all()
    return "\n".join(f"{name} {value}" for name, value in rows)


def digest_as_of(session: Session, as_of: int) -> str:
    """The trail's digest as of entry ``as_of``: for an intact trail, the digest ``verify``
    gives (``oos-notify audit verify --as-of N``), read from each chain's newest entry up to
    that number instead of a walk of every entry. A document that prints it with the number lets
    an auditor have it recomputed from the trail at any later time."""
    _, start = _parse_head(_head(session, CHAIN_HEAD) or _head_value(0, GENESIS_HASH))
    ends = [_newest(session, None, as_of) or (0, GENESIS_HASH)]
    ends += [_newest(session, c, as_of) or (0, start) for c in range(CHAINS)]
    return _digest(ends)


def _newest(session: Session, chain: int | None, as_of: int) -> tuple[int, str] | None:
    """A chain's newest committed entry numbered up to ``as_of``: its number and hash."""
    of_chain = _ENTRIES.c.chain.is_(None) if chain is None else _ENTRIES.c.chain == chain
    row = session.execute(
        select(_ENTRIES.c.seq, _ENTRIES.c.entry_hash)
        .where(of_chain, _ENTRIES.c.seq.between(1, as_of))
        .order_by(_ENTRIES.c.seq.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else (row.seq, row.entry_hash)


def _digest(ends: Sequence[tuple[int, str]]) -> str:
    """SHA-256 over the newest entry of every chain (the single chain of the entries written
    before migration 0004 first, then chain 0, 1, …), one ``number hash`` line each."""
    return hashlib.sha256("\n".join(_head_value(*end) for end in ends).encode()).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """What ``verify`` found: how many entries it checked, the digest of the trail as of an entry
    number, and, if any, the first broken entry."""

    entries: int
    last_seq: int
    """The highest entry number checked."""
    as_of: int
    """The entry number ``digest`` is the trail's digest at."""
    digest: str
    broken_seq: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


@dataclass
class _ChainCheck:
    """Where the walk of one chain is: its last good entry."""

    name: str
    seq: int
    digest: str
    count: int = 0


def verify(session: Session, batch_size: int = 1000, as_of: int | None = None) -> ChainReport:
    """Walk every chain in order and check every link, and each chain's end against its head, up
    to the chain's first broken entry; report the lowest-numbered broken entry of all. The digest
    covers each chain's newest entry up to ``as_of`` (by default, the newest entry of all)."""
    heads = {c: _head(session, chain_head(c)) for c in range(CHAINS)}
    legacy = _head(session, CHAIN_HEAD)
    try:
        start = _parse_head(legacy or "")
        ends = {c: _parse_head(value or "") for c, value in heads.items()}
    except ValueError:
        return ChainReport(0, 0, 0, GENESIS_HASH, None, "a chain head is missing or unreadable")
    checks = [_ChainCheck("the chain written before migration 0004", 0, GENESIS_HASH)]
    checks += [_ChainCheck(f"chain {c}", 0, start[1]) for c in range(CHAINS)]
    limit = as_of if as_of is not None else _last_seq(session)
    digest_at: dict[int, tuple[int, str]] = {}
    stray = session.execute(
        select(func.min(_ENTRIES.c.seq)).where(
            _ENTRIES.c.chain.is_not(None), ~_ENTRIES.c.chain.between(0, CHAINS - 1)
        )
    ).scalar()
    problems = [] if stray is None else [(stray, "it belongs to no chain of the trail")]
    for index, check in enumerate(checks):
        chain = None if index == 0 else index - 1
        digest_at[index] = (check.seq, check.digest)
        problem = _walk(session, batch_size, chain, check, limit, digest_at, index)
        head = start if chain is None else ends[chain]
        if problem is None and (check.seq, check.digest) != head:
            problem = (
                check.seq,
                (
                    f"the head of {check.name} is entry {head[0]}, but the chain ends at entry "
                    f"{check.seq}: entries at its end were removed, or the head was changed"
                ),
            )
        if problem is not None:
            problems.append(problem)
    if problems:
        return _report(checks, limit, digest_at, *min(problems))
    return _report(checks, limit, digest_at)


def _walk(
    session: Session,
    batch_size: int,
    chain: int | None,
    check: _ChainCheck,
    limit: int,
    digest_at: dict[int, tuple[int, str]],
    index: int,
) -> tuple[int, str] | None:
    """Check one chain's links in order, up to its first broken entry (its number and why)."""
    for row in _entries(session, batch_size, chain):
        problem = _row_problem(row, check)
        if problem is not None:
            return (row if isinstance(row, int) else row.seq), problem
        assert not isinstance(row, int)
        check.seq, check.digest, check.count = row.seq, row.entry_hash, check.count + 1
        if row.seq <= limit:
            digest_at[index] = (check.seq, check.digest)
    return None


def _report(
    checks: list[_ChainCheck],
    limit: int,
    digest_at: dict[int, tuple[int, str]],
    broken: int | None = None,
    problem: str | None = None,
) -> ChainReport:
    digest = _digest([digest_at.get(i, (0, GENESIS_HASH)) for i in range(len(checks))])
    last = max(check.seq for check in checks)
    return ChainReport(sum(c.count for c in checks), last, limit, digest, broken, problem)


_LAST_SEQ = select(func.coalesce(func.max(_ENTRIES.c.seq), 0))
"""Built once: every writing transaction on SQLite asks it."""


def _last_seq(session: Session) -> int:
    return int(session.execute(_LAST_SEQ).scalar_one())


def _row_problem(row: Row[Any] | int, check: _ChainCheck) -> str | None:
    if isinstance(row, int):
        return "it cannot be read: it was changed after it was written"
    if recomputed_hash(row) != row.entry_hash:
        return "its content does not match its hash: it was changed after it was written"
    if row.prev_hash != check.digest:
        before = f"entry {check.seq}" if check.seq else f"the start of {check.name}"
        return (
            f"it does not follow {before}: an entry between them was removed, "
            "or entries were reordered"
        )
    return signatures.binding_problem(row.detail)


def _entries(session: Session, batch_size: int, chain: int | None) -> Iterator[Row[Any] | int]:
    """Every entry of a chain in order, a batch at a time; an entry that cannot be read, as its
    number."""
    number = _ENTRIES.c.seq
    of_chain: ColumnElement[bool] = (
        _ENTRIES.c.chain.is_(None) if chain is None else _ENTRIES.c.chain == chain
    )
    last = 0
    while (
        seqs := session.execute(
            select(number).where(of_chain, number > last).order_by(number).limit(batch_size)
        )
        .scalars()
        .all()
    ):
        try:
            batch: Sequence[Row[Any] | int] = session.execute(
                select(_ENTRIES).where(of_chain, number.between(seqs[0], seqs[-1])).order_by(number)
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
    """The hash a stored entry's content, number and link call for (a row or an AuditEntry)."""
    content = _content(
        entry.at, entry.action, entry.actor, entry.incident_id, entry.notification_id, entry.detail
    )
    return _link(entry.prev_hash, content, entry.seq, entry.chain)
