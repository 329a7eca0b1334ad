"""Agreements under change control (ICH Q10): each version of ``config/`` is proposed by one
console user, approved by a second ``qa`` user's signature with an effective time (or rejected),
and runs only from that time; the service never runs a version nobody approved.

The first version a database sees is adopted as the baseline: the service has to run something
on an empty database (the quick start), and what the customer agreed before installing it is
their procedure, not this service's record. The audit trail says so in those words.

States and their transitions::

    proposed --approve--> approved --a later approved version takes effect--> superseded
    proposed --reject---> rejected
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, exists
from sqlmodel import Session, col, select

from oos_notify.agreements import versions
from oos_notify.agreements.config import Agreements
from oos_notify.errors import Conflict, InvalidFields, NotFound
from oos_notify.store import audit, signatures
from oos_notify.store.db import insert_missing
from oos_notify.store.locks import one_at_a_time
from oos_notify.store.models import AgreementVersion, ServiceValue

INSTALLATION = "installation"
"""Who proposed and approved the baseline: nobody of the console, and the trail says so."""
BASELINE_NOTE = "adopted at installation; its approval is the customer's procedure"
APPROVAL_MEANING = "approval of agreement change"
BASELINE_CLAIM = "agreements_baseline"
"""The ``service_values`` row the first start writes before it adopts a baseline."""
_VALUES = ServiceValue.__table__  # type: ignore[attr-defined]


class VersionState(StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"


RAN = (VersionState.APPROVED, VersionState.SUPERSEDED)
"""The states of versions that were approved: the only ones that ever run."""


def short(content_sha256: str) -> str:
    """How a version's hash is shown beside its number: enough of it to compare by eye."""
    return content_sha256[:12]


def named(row: AgreementVersion) -> str:
    return f"#{row.id} (sha256 {short(row.content_sha256)})"


def approval(row: AgreementVersion | None) -> str:
    """Which approved version something ran under, in a sentence an inspector reads."""
    if row is None:
        return "none recorded: opened before the agreements came under change control"
    if row.proposed_by == INSTALLATION:
        return f"{named(row)}, {BASELINE_NOTE}"
    effective = row.effective_at.isoformat() if row.effective_at else "never"
    return (
        f"{named(row)}, proposed by {row.proposed_by}, approved by {row.approved_by} "
        f"(signed with their password), effective {effective}"
    )


# --- reading ------------------------------------------------------------------------------------


def history(session: Session) -> list[AgreementVersion]:
    """Every version, the newest first."""
    return list(session.exec(select(AgreementVersion).order_by(col(AgreementVersion.id).desc())))


def get(session: Session, version_id: int) -> AgreementVersion:
    row = session.get(AgreementVersion, version_id)
    if row is None:
        raise NotFound(
            f"no agreement version #{version_id}: `oos-notify agreements history` lists them"
        )
    return row


_TABLE = AgreementVersion.__table__  # type: ignore[attr-defined]
_OTHER = _TABLE.alias("other")
_RAN_STATES = [state.value for state in RAN]
_REPLACES = (
    exists()
    .where(
        _OTHER.c.state == VersionState.APPROVED.value,
        _OTHER.c.id != _TABLE.c.id,
        _OTHER.c.effective_at <= _TABLE.c.effective_at,
    )
    .label("replaces")
)
_IN_FORCE = select(_TABLE.c.id, _TABLE.c.effective_at, _REPLACES).where(
    _TABLE.c.state.in_(_RAN_STATES)
)
"""Core statements for what every event asks: which version is in force, and whether it has yet
to replace an approved one. Its id, not its row: the row's JSON content, every center's
agreements, is read once per version (``AgreementsInForce``), not once per request."""


@dataclass(frozen=True)
class InForce:
    """The version in force at an instant, by its id, and whether an approved version it
    replaces is still to be marked superseded (``take_effect``)."""

    id: int
    replaces: bool


def in_force_id(session: Session, now: datetime) -> InForce | None:
    """``in_force`` by its id alone, in one statement (two when the clock is set before the first
    version took effect)."""
    row = session.execute(
        _IN_FORCE.where(_TABLE.c.effective_at <= now)
        .order_by(_TABLE.c.effective_at.desc(), _TABLE.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        row = session.execute(
            _IN_FORCE.order_by(_TABLE.c.effective_at, _TABLE.c.id).limit(1)
        ).first()
    return None if row is None else InForce(row.id, bool(row.replaces))


def in_force(session: Session, now: datetime) -> AgreementVersion | None:
    """The approved version in force at ``now``: the one approved to take effect last at or
    before it. With a clock set before the first one took effect, the first one (it is what
    ran); None on a database that has none yet."""
    approved = select(AgreementVersion).where(col(AgreementVersion.state).in_(list(RAN)))
    found = session.exec(
        approved.where(col(AgreementVersion.effective_at) <= now)
        .order_by(col(AgreementVersion.effective_at).desc(), col(AgreementVersion.id).desc())
        .limit(1)
    ).first()
    if found is not None:
        return found
    return session.exec(
        approved.order_by(col(AgreementVersion.effective_at), col(AgreementVersion.id)).limit(1)
    ).first()


def waiting(session: Session, content_sha256: str, now: datetime) -> AgreementVersion | None:
    """The newest version with this content that has not run yet: proposed, or approved to take
    effect later."""
    rows = session.exec(
        select(AgreementVersion)
        .where(AgreementVersion.content_sha256 == content_sha256)
        .order_by(col(AgreementVersion.id).desc())
    ).all()
    for row in rows:
        if row.state == VersionState.PROPOSED:
            return row
        if row.state == VersionState.APPROVED and row.effective_at and row.effective_at > now:
            return row
    return None


# --- changing -----------------------------------------------------------------------------------


def adopt_baseline(
    session: Session, agreements: Agreements, now: datetime
) -> AgreementVersion | None:
    """On a database with no version yet, adopt ``agreements`` as the baseline in force from
    ``now``; else nothing. Replicas starting together on one empty database adopt one."""
    value = versions.content(agreements)
    digest = versions.content_hash(value)
    # A write first: on SQLite, processes starting together on an empty file then queue for the
    # write lock here instead of each reading an empty table and adopting a baseline of its own.
    insert_missing(session, _VALUES, [{"name": BASELINE_CLAIM, "value": digest}])
    one_at_a_time(session, "agreement versions", "baseline")
    if session.exec(select(AgreementVersion.id).limit(1)).first() is not None:
        return None
    row = AgreementVersion(
        content_sha256=digest,
        content=value,
        state=VersionState.APPROVED,
        diff=versions.diff(None, value, "(nothing)", f"sha256 {short(digest)}"),
        proposed_by=INSTALLATION,
        proposed_at=now,
        approved_by=INSTALLATION,
        approved_at=now,
        effective_at=now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        now,
        "agreement_version_adopted",
        INSTALLATION,
        version=row.id,
        content_sha256=digest,
        effective_at=now.isoformat(),
        note=BASELINE_NOTE,
    )
    return row


def propose(
    session: Session, agreements: Agreements, proposer: str, now: datetime
) -> AgreementVersion:
    """Record ``agreements`` as a proposed change from the version in force, with its diff.
    Refused when they are the version in force, or already wait as a version."""
    one_at_a_time(session, "agreement versions", "change")
    value = versions.content(agreements)
    digest = versions.content_hash(value)
    current = in_force(session, now)
    if current is None:
        raise Conflict(
            "no agreements in force yet: the service adopts config/ as the baseline at its "
            "first start; start it once, then propose changes"
        )
    if current.content_sha256 == digest:
        raise Conflict(f"nothing to propose: config/ is the version in force, {named(current)}")
    pending = waiting(session, digest, now)
    if pending is not None:
        raise Conflict(f"config/ is already {pending.state} as version {named(pending)}")
    row = AgreementVersion(
        content_sha256=digest,
        content=value,
        state=VersionState.PROPOSED,
        based_on=current.id,
        diff=versions.diff(
            current.content, value, f"in force {named(current)}", f"proposed {short(digest)}"
        ),
        proposed_by=proposer,
        proposed_at=now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        now,
        "agreement_version_proposed",
        proposer,
        version=row.id,
        content_sha256=digest,
        based_on=row.based_on,
        diff_sha256=signatures.content_hash({"diff": row.diff}),
    )
    return row


def approval_content(row: AgreementVersion, effective_at: datetime) -> dict[str, Any]:
    """What an approver signs: the version, its content and diff by their hashes, who proposed
    it, and when it takes effect."""
    return {
        "act": APPROVAL_MEANING,
        "agreement_version": row.id,
        "content_sha256": row.content_sha256,
        "based_on": row.based_on,
        "diff_sha256": signatures.content_hash({"diff": row.diff}),
        "proposed_by": row.proposed_by,
        "effective_at": effective_at.isoformat(),
    }


def check_approval(row: AgreementVersion, approver: str, role: str, effective_at: datetime) -> None:
    """Refuse an approval that change control does not allow, before anything is signed."""
    if row.state != VersionState.PROPOSED:
        raise Conflict(f"version {named(row)} is {row.state}: only a proposed version is approved")
    if role != "qa":
        raise InvalidFields(
            [("--as", f"{approver} is a {role} account: only a qa account approves", "not_qa")]
        )
    if approver == row.proposed_by:
        raise InvalidFields(
            [
                (
                    "--as",
                    f"{approver} proposed version #{row.id}: a second qa user must approve it",
                    "same_person",
                )
            ]
        )
    if effective_at.tzinfo is None:
        raise InvalidFields(
            [("--effective", "must carry its offset, e.g. 2026-12-01T00:00:00+01:00", "no_offset")]
        )


def approve(
    session: Session,
    row: AgreementVersion,
    approver: str,
    role: str,
    effective_at: datetime,
    now: datetime,
    *,
    printed_name: str,
) -> AgreementVersion:
    """Record the approval of a proposed version to take effect at ``effective_at`` (a time
    already past takes effect now), signed by ``approver`` (printed as ``printed_name``, the
    account's registered name) with the password they re-entered just before: the caller checks
    it (``accounts.password_matches``)."""
    one_at_a_time(session, "agreement versions", "change")
    session.refresh(row)
    check_approval(row, approver, role, effective_at)
    at = max(effective_at, now)
    signed = signatures.signed(
        approval_content(row, at),
        signer=approver,
        method="password",
        printed_name=printed_name,
        at=now,
        zone="UTC",
        meaning=APPROVAL_MEANING,
    )
    row.state = VersionState.APPROVED
    row.approved_by = approver
    row.approved_at = now
    row.effective_at = at
    row.approval_signature = dict(signed[signatures.SIGNATURE])
    session.add(row)
    audit.record(
        session,
        now,
        "agreement_version_approved",
        approver,
        version=row.id,
        content_sha256=row.content_sha256,
        effective_at=at.isoformat(),
        **signed,
    )
    take_effect(session, now)
    return row


def reject(
    session: Session, row: AgreementVersion, who: str, role: str, reason: str, now: datetime
) -> AgreementVersion:
    """Record that a proposed version will not run, and why."""
    one_at_a_time(session, "agreement versions", "change")
    session.refresh(row)
    if row.state != VersionState.PROPOSED:
        raise Conflict(f"version {named(row)} is {row.state}: only a proposed version is rejected")
    if role != "qa":
        raise InvalidFields(
            [("--as", f"{who} is a {role} account: only a qa account rejects", "not_qa")]
        )
    row.state = VersionState.REJECTED
    row.rejected_by = who
    row.rejected_at = now
    row.reason = reason
    session.add(row)
    audit.record(
        session,
        now,
        "agreement_version_rejected",
        who,
        version=row.id,
        content_sha256=row.content_sha256,
        reason=reason,
    )
    return row


def take_effect(session: Session, now: datetime) -> int | None:
    """Mark superseded the approved versions a later one replaced by ``now``, with an entry in
    the trail for each version that took effect. Returns the id of the version in force (None
    on a database with none yet)."""
    found = in_force_id(session, now)
    if found is None or not found.replaces:
        return None if found is None else found.id
    # Replicas that see the same version take effect at once mark it once: the first commits,
    # the others find nothing left to replace.
    one_at_a_time(session, "agreement versions", "change")
    replaced = _replaced(session, now)
    current = in_force(session, now)
    if current is None:
        return None
    if not replaced or current.effective_at is None:
        return current.id
    for row in replaced:
        row.state = VersionState.SUPERSEDED
        row.superseded_at = current.effective_at
        session.add(row)
    audit.record(
        session,
        now,
        "agreement_version_in_force",
        "service",
        version=current.id,
        content_sha256=current.content_sha256,
        effective_at=current.effective_at.isoformat(),
        superseded=[row.id for row in replaced],
    )
    return current.id


def _replaced(session: Session, now: datetime) -> list[AgreementVersion]:
    current = in_force(session, now)
    if current is None or current.effective_at is None:
        return []
    return list(
        session.exec(
            select(AgreementVersion)
            .where(
                AgreementVersion.state == VersionState.APPROVED,
                AgreementVersion.id != current.id,
                col(AgreementVersion.effective_at) <= current.effective_at,
            )
            .order_by(col(AgreementVersion.id))
            .execution_options(populate_existing=True)
        ).all()
    )


# --- the service's view -----------------------------------------------------------------------


@dataclass(frozen=True)
class StartReport:
    """What start-up found: the version in force, whether it was adopted now, and what the files
    on disk are to change control."""

    in_force: AgreementVersion
    adopted: bool
    on_disk_sha256: str
    waiting: AgreementVersion | None

    @property
    def on_disk_runs(self) -> bool:
        return self.on_disk_sha256 == self.in_force.content_sha256

    def sentence(self) -> str:
        """What the operator reads at start."""
        head = f"agreements in force: version {named(self.in_force)}"
        if self.adopted:
            return f"{head}, {BASELINE_NOTE}"
        if self.on_disk_runs:
            return f"{head}, the same as config/"
        shown = f"config/ (sha256 {short(self.on_disk_sha256)}) differs from the version in force"
        if self.waiting is None:
            return (
                f"{head}; {shown} and is not used: it is not proposed yet "
                "(oos-notify agreements propose --as <your console address>)"
            )
        if self.waiting.state == VersionState.PROPOSED:
            return (
                f"{head}; {shown} and is not used: it waits for approval as version "
                f"{named(self.waiting)} (oos-notify agreements approve {self.waiting.id} "
                "--effective <time> --as <a second qa user>)"
            )
        assert self.waiting.effective_at is not None
        return (
            f"{head}; {shown}: it is approved as version {named(self.waiting)} and takes effect "
            f"at {self.waiting.effective_at.isoformat()}"
        )


class AgreementsInForce:
    """The approved agreements in force at any instant, asked of the database each time (a
    version approved by another process takes effect at its time, with no restart) by its id
    alone; each version's content is read and restored once."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._loaded: dict[int, Agreements] = {}

    def at(self, session: Session, now: datetime) -> Agreements:
        found = in_force_id(session, now)
        return self.version(session, None if found is None else found.id)

    def version(self, session: Session, version_id: int | None) -> Agreements:
        """The agreements of version ``version_id`` (what ``take_effect`` returns)."""
        if version_id is None:
            raise RuntimeError("no approved agreements: the service adopts a baseline at start")
        known = self._loaded.get(version_id)
        if known is None:
            content = session.execute(
                select(_TABLE.c.content).where(_TABLE.c.id == version_id)
            ).scalar_one()
            known = self._loaded[version_id] = versions.restore(content, version_id)
        return known

    def now(self, now: datetime) -> Agreements:
        """The agreements in force at ``now``, read in a session of their own."""
        with Session(self._engine) as session:
            return self.at(session, now)


def start(session: Session, on_disk: Agreements, now: datetime) -> StartReport:
    """At start-up: adopt the baseline on an empty database, let versions whose time came take
    effect, and say how the files on disk stand."""
    adopted = adopt_baseline(session, on_disk, now)
    take_effect(session, now)
    current = in_force(session, now)
    assert current is not None
    digest = versions.content_hash(versions.content(on_disk))
    return StartReport(current, adopted is not None, digest, waiting(session, digest, now))
