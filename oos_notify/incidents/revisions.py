"""Four eyes on a decision's revision: a revision is proposed (by a QA user who signs it, or by
the QA system's API key) and takes effect only when a QA user other than its proposer approves
it with their signature. Until then the decision in force stands and the center hears nothing
of it. A proposal may be rejected, signed, and then never takes effect.

Each signing is kept in the audit entry of its act (``signatures.signed``): the proposal in
``decision_revision_proposed``, the approval in ``decision_revised`` (the decision it records),
the rejection in ``decision_revision_rejected``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import update
from sqlmodel import Session, col, select

from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.agreements.vocabulary import AckResponse
from oos_notify.errors import Conflict, Forbidden, NotFound
from oos_notify.ids import new_id
from oos_notify.incidents import decisions, offers
from oos_notify.incidents.acknowledgement import Purpose, answer_that_counts, decision_meaning
from oos_notify.incidents.decisions import DecisionRevisionOut, RecordedBy, Signer
from oos_notify.store import audit, signatures
from oos_notify.store.models import DecisionProposal, Incident
from oos_notify.texts import storable

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"

PROPOSE_MEANING = (
    "I propose this revision of the decision. It takes effect only when another QA user "
    "approves it."
)
APPROVE_MEANING = (
    "I approve this revision: it takes effect now, replaces the decision in force, and the "
    "center is told."
)
REJECT_MEANING = "I reject this proposed revision: it never takes effect."


class DecisionRevisionIn(BaseModel):
    """A decision on an offered product as the decider gave it outside the decision page,
    proposed for a second person's approval."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    response: AckResponse
    decided_by: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(storable)]
    """The contact id of the decider who gave the decision: one of those asked."""
    reason: Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(storable)]
    proposed_for: RecordedBy | None = None
    """Through an API key: the person in the QA system on whose behalf it proposes, as that
    system names them (not a signature: the approver signs)."""
    recorded_by: RecordedBy | None = None
    """Refused: a revision no longer takes effect on one caller's word."""


class SignatureOut(BaseModel):
    """One signing, as the record shows it."""

    signer: str
    printed_name: str
    method: str
    signed_at: datetime
    zone: str
    meaning: str
    content_sha256: str


class ProposalOut(BaseModel):
    id: str
    incident_id: str
    status: str
    response: str
    decided_by: str
    reason: str
    proposed_by: str
    proposed_for: RecordedBy | None
    proposed_at: datetime
    proposal_signature: SignatureOut | None
    settled_by: str | None
    settled_at: datetime | None
    settled_signature: SignatureOut | None
    acknowledgement_id: str | None

    @classmethod
    def of(cls, row: DecisionProposal) -> ProposalOut:
        return cls(
            id=row.id,
            incident_id=row.incident_id,
            status=row.status,
            response=row.response,
            decided_by=row.decided_by,
            reason=row.reason,
            proposed_by=row.proposed_by,
            proposed_for=RecordedBy.model_validate(row.proposed_for) if row.proposed_for else None,
            proposed_at=row.proposed_at,
            proposal_signature=_signature_out(row.proposal_signature),
            settled_by=row.settled_by,
            settled_at=row.settled_at,
            settled_signature=_signature_out(row.settled_signature),
            acknowledgement_id=row.acknowledgement_id,
        )


def _signature_out(kept: dict[str, Any] | None) -> SignatureOut | None:
    if kept is None:
        return None
    return SignatureOut.model_validate(kept, from_attributes=False)


def _content(
    session: Session, act: str, incident: Incident, proposal: DecisionProposal, now: datetime
) -> dict[str, Any]:
    """What a signer of ``act`` is shown and signs: the incident, the lot, the revision (whose
    decision, which choice and what it means, why), the decision it would replace, and the
    time."""
    offer = incident.oos_release
    asked = {p.contact_id: p.name for p in offers.stored_asked(offer)} if offer else {}
    previous = answer_that_counts(session, incident, Purpose.DECISION)
    return {
        "act": act,
        "incident_id": incident.id,
        "incident_ref": incident.incident_ref,
        "lot_number": incident.lot_number,
        "proposal_id": proposal.id,
        "response": proposal.response,
        "decided_by": proposal.decided_by,
        "decider_name": asked.get(proposal.decided_by),
        "decision_meaning": decision_meaning(AckResponse(proposal.response), incident.oos_release),
        "reason": proposal.reason,
        "replaces_response": previous.response if previous else None,
        "at": now.astimezone(UTC).isoformat(),
    }


def _sign(
    session: Session,
    act: str,
    meaning: str,
    incident: Incident,
    proposal: DecisionProposal,
    signer: Signer,
    now: datetime,
) -> dict[str, Any]:
    return signatures.signed(
        _content(session, act, incident, proposal, now),
        signer=signer.email,
        method=signer.method,
        printed_name=signer.printed_name,
        at=now,
        zone=EffectiveAgreement.stored(incident.agreement).timezone,
        meaning=meaning,
    )


def propose(
    session: Session,
    incident_id: str,
    revision: DecisionRevisionIn,
    now: datetime,
    *,
    signer: Signer | None = None,
    api_key: str | None = None,
) -> ProposalOut:
    """Record a proposed revision, pending a second person's approval; the decision in force
    and what the center hears stay as they are. A QA user's proposal is signed by them; one
    through an API key names the key (and whom the calling system says it is for)."""
    if revision.recorded_by is not None:
        raise Forbidden(
            "an API key cannot record a revision of a decision: send the revision without "
            "recorded_by to propose it; it takes effect when a QA user approves it, signed, "
            "in the console"
        )
    found = decisions.revisable(session, incident_id, revision.response, revision.decided_by)
    assert signer is not None or api_key is not None
    proposal = DecisionProposal(
        id=new_id("rev"),
        incident_id=found.incident.id,
        response=revision.response.value,
        decided_by=found.decider.contact_id,
        reason=revision.reason,
        proposed_by=signer.email if signer else f"api key {api_key}",
        proposed_for=revision.proposed_for.model_dump() if revision.proposed_for else None,
        proposed_at=now,
    )
    detail: dict[str, Any] = {}
    if signer is not None:
        detail = _sign(
            session,
            "propose a decision revision",
            PROPOSE_MEANING,
            found.incident,
            proposal,
            signer,
            now,
        )
        proposal.proposal_signature = detail[signatures.SIGNATURE]
    session.add(proposal)
    audit.record(
        session,
        now,
        "decision_revision_proposed",
        proposal.proposed_by,
        incident_id=proposal.incident_id,
        proposal_id=proposal.id,
        response=proposal.response,
        decided_by=proposal.decided_by,
        reason=proposal.reason,
        proposed_for=proposal.proposed_for,
        **detail,
    )
    session.flush()
    return ProposalOut.of(proposal)


def _pending(session: Session, incident_id: str, proposal_id: str) -> DecisionProposal:
    proposal = session.get(DecisionProposal, proposal_id)
    if proposal is None or proposal.incident_id != incident_id:
        raise NotFound(f"incident {incident_id!r} has no proposed revision {proposal_id!r}")
    if proposal.status != PENDING:
        raise Conflict(f"the proposed revision {proposal_id} was {proposal.status} already")
    return proposal


def approve(
    session: Session,
    incident_id: str,
    proposal_id: str,
    signer: Signer,
    now: datetime,
    mail_domain: str,
) -> DecisionRevisionOut:
    """The second person's approval: the revision takes effect, signed by the approver, and the
    center, QA and the decider are told. Its proposer cannot approve it."""
    proposal = _pending(session, incident_id, proposal_id)
    if proposal.proposed_by == signer.email:
        raise Forbidden(
            f"{signer.email} proposed this revision and cannot also approve it: another QA "
            "user must approve it (four eyes)"
        )
    found = decisions.revisable(
        session, incident_id, AckResponse(proposal.response), proposal.decided_by
    )
    detail = _sign(
        session,
        "approve a decision revision",
        APPROVE_MEANING,
        found.incident,
        proposal,
        signer,
        now,
    )
    _settle(session, proposal, APPROVED, signer, detail, now)
    recorded = decisions.revise(
        session,
        found,
        AckResponse(proposal.response),
        proposal.reason,
        signer,
        now,
        mail_domain,
        signed=detail,
        revision={"proposal_id": proposal.id, "proposed_by": proposal.proposed_by},
    )
    proposal.acknowledgement_id = recorded.acknowledgement_id
    session.add(proposal)
    session.flush()
    return recorded


def reject(
    session: Session, incident_id: str, proposal_id: str, signer: Signer, now: datetime
) -> ProposalOut:
    """Reject a proposed revision, signed: it never takes effect. Its proposer may withdraw it
    this way too."""
    proposal = _pending(session, incident_id, proposal_id)
    incident = session.get(Incident, incident_id)
    assert incident is not None
    detail = _sign(
        session, "reject a decision revision", REJECT_MEANING, incident, proposal, signer, now
    )
    _settle(session, proposal, REJECTED, signer, detail, now)
    audit.record(
        session,
        now,
        "decision_revision_rejected",
        signer.email,
        incident_id=incident_id,
        proposal_id=proposal.id,
        **detail,
    )
    session.flush()
    return ProposalOut.of(proposal)


def _settle(
    session: Session,
    proposal: DecisionProposal,
    status: str,
    signer: Signer,
    detail: dict[str, Any],
    now: datetime,
) -> None:
    """Settle a pending proposal; a conditional update, so that two approvals at once (from two
    processes) cannot both make it take effect: the second finds it settled and changes
    nothing."""
    won = session.execute(
        update(DecisionProposal)
        .where(col(DecisionProposal.id) == proposal.id, col(DecisionProposal.status) == PENDING)
        .values(
            status=status,
            settled_by=signer.email,
            settled_at=now,
            settled_signature=detail[signatures.SIGNATURE],
        )
    )
    if won.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"the proposed revision {proposal.id} was settled by someone else first")
    session.refresh(proposal)


def for_incident(session: Session, incident_id: str) -> list[ProposalOut]:
    """The incident's proposed revisions, oldest first, whatever became of them."""
    if session.get(Incident, incident_id) is None:
        raise NotFound(f"no incident {incident_id!r}")
    rows = session.exec(
        select(DecisionProposal)
        .where(DecisionProposal.incident_id == incident_id)
        .order_by(col(DecisionProposal.proposed_at), col(DecisionProposal.id))
    ).all()
    return [ProposalOut.of(row) for row in rows]
