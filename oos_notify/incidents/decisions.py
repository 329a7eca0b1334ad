"""Decisions QA records for a decider: the one a physician gave on the phone after asking to be
called, or a correction on the decider's word. The decision stays the decider's (their contact,
their role); the QA user who approves the revision signs the record (``revisions`` keeps the
four eyes), with the reason, and the decider is told what was recorded in their name so that a
misheard answer is caught."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlmodel import Session, col, select

from oos_notify.addresses import Address, Name
from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.agreements.vocabulary import AckResponse, Disposition
from oos_notify.errors import Conflict, InvalidFields, NotFound
from oos_notify.incidents import offers, outcome, pathway_gates, physician, qa_reports
from oos_notify.incidents.acknowledgement import (
    DECISION_KINDS,
    DECISION_RECEIPT_TEMPLATE,
    Answer,
    Purpose,
    acknowledge_round,
    answer_that_counts,
    decision_meaning,
    record_decision,
    signature,
)
from oos_notify.incidents.planning import plan_message
from oos_notify.store import outbox, signatures
from oos_notify.store.lifecycle import IncidentStatus
from oos_notify.store.models import Incident, Notification
from oos_notify.store.outbox import Addressee

DECISION_RECORDED_TEMPLATE = "decision_recorded"


class RecordedBy(BaseModel):
    """A person at the manufacturer, named by name and address."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Name
    email: Address


@dataclass(frozen=True)
class Signer:
    """Who signs a revision: a console account whose password was just checked at the signing.
    The printed name is the account's, never typed at the signing."""

    email: str
    printed_name: str
    method: signatures.Method = "password"


class DecisionRevisionOut(BaseModel):
    incident_id: str
    acknowledgement_id: str
    decision: str
    decided_at: datetime
    replaces: str | None
    """The decision it replaces, if one was recorded before."""


@dataclass(frozen=True)
class Revisable:
    """An incident whose decision may be revised, with the decider the revision names."""

    incident: Incident
    offer: dict[str, Any]
    decider: Addressee
    agreement: EffectiveAgreement


def revisable(
    session: Session, incident_id: str, response: AckResponse, decided_by: str
) -> Revisable:
    """The incident, if a decision ``response`` by ``decided_by`` may be recorded on it now:
    open, with a product offered, the pathway's gates met, and ``decided_by`` one of those
    asked to decide."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(f"no incident {incident_id!r}")
    if IncidentStatus(incident.status).is_closed:
        raise Conflict(f"incident {incident.incident_ref!r} is {incident.status}")
    offer = incident.oos_release
    if offer is None or incident.disposition != Disposition.OOS_RELEASE_OFFERED:
        raise Conflict(
            f"incident {incident.incident_ref!r} has no out-of-specification product offered "
            "for a decision"
        )
    if not response.is_decision:
        choices = ", ".join(r for r in AckResponse if r.is_decision)
        raise InvalidFields([("response", f"a decision is one of {choices}", "invalid")])
    missing = pathway_gates.missing_before_decision(offer, response)
    if missing:
        raise Conflict(
            f"incident {incident.incident_ref!r}: under {offer['name']} the physician requests "
            f"supply only once {', '.join(missing)} is on file; confirm it with oos_checklist "
            "in an update event first"
        )
    asked = {person.contact_id: person for person in offers.stored_asked(offer)}
    decider = asked.get(decided_by)
    if decider is None:
        raise InvalidFields(
            [
                (
                    "decided_by",
                    f"{decided_by!r} was not asked to decide; asked: {', '.join(asked)}",
                    "unknown",
                )
            ]
        )
    return Revisable(incident, offer, decider, EffectiveAgreement.stored(incident.agreement))


def revise(
    session: Session,
    found: Revisable,
    response: AckResponse,
    reason: str,
    recorded_by: Signer,
    now: datetime,
    mail_domain: str,
    *,
    signed: dict[str, Any],
    revision: dict[str, Any],
) -> DecisionRevisionOut:
    """Record the decision in the decider's name, audited with the approver's signature and the
    reason; it replaces the decision in force, cancels what waits for one, acknowledges the
    round if nobody had, and tells the center, QA and the decider. ``signed`` is the approver's
    signature (``signatures.signed``), kept in the audit entry of the decision."""
    incident, offer, decider, agreement = (
        found.incident,
        found.offer,
        found.decider,
        found.agreement,
    )
    request = session.exec(
        select(Notification)
        .where(
            Notification.incident_id == incident.id,
            Notification.contact_id == decider.contact_id,
            col(Notification.kind).in_([k.value for k in DECISION_KINDS]),
        )
        .order_by(col(Notification.created_at).desc())
    ).first()
    assert request is not None, "every decider asked has a decision request"
    previous = answer_that_counts(session, incident, Purpose.DECISION)
    meaning = decision_meaning(response, offer)
    answer = Answer(
        response,
        reason,
        None,
        None,
        now,
        signature=signature(
            recorded_by.printed_name,
            f"record, as {decider.name} decided it, the decision to {meaning}",
            now,
            agreement.timezone,
        ),
        revision={
            **revision,
            "reason": reason,
            "recorded_by": {"name": recorded_by.printed_name, "email": recorded_by.email},
            "replaces": previous.id if previous else None,
            "previous_response": previous.response if previous else None,
        },
        signed=signed,
    )
    recorded = record_decision(session, incident, request, answer)
    assert recorded is not None  # a revision always replaces the decision in force
    if decider.contact_id == physician.TREATING_PHYSICIAN_ID:
        physician.mark_confirmed(session, incident, recorded_by.email, now)
    outcome.tell_outcome(session, incident, agreement, decider.email, now, mail_domain)
    started = acknowledge_round(session, incident, recorded_by.email, agreement, now) or []
    receipts = qa_reports.receipts(incident, agreement, DECISION_RECEIPT_TEMPLATE, now)
    told = plan_message(decider, DECISION_RECORDED_TEMPLATE, now)
    outbox.schedule(session, incident.id, [*started, *receipts, told], now, mail_domain)
    session.flush()
    return DecisionRevisionOut(
        incident_id=incident.id,
        acknowledgement_id=recorded.id,
        decision=recorded.response,
        decided_at=now,
        replaces=previous.id if previous else None,
    )
