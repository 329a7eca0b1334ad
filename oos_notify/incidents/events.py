"""Release-spec failure events and their follow-ups: validation, idempotency, opening and updating
incidents, and scheduling what the agreement says, all in the caller's one transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import Row, func
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from oos_notify.addresses import Address, Name
from oos_notify.agreements import business_time
from oos_notify.agreements.business_time import CenterCalendar
from oos_notify.agreements.config import Agreements, EffectiveAgreement
from oos_notify.agreements.vocabulary import (
    GATED_TRANSITIONS,
    OPENING_EVENT_TYPES,
    SEVERITY_ORDER,
    AckResponse,
    Disposition,
    EventType,
    KeyDate,
    ProductStatus,
    Severity,
)
from oos_notify.errors import Conflict, InvalidFields
from oos_notify.ids import new_id
from oos_notify.incidents import (
    clock_rules,
    offers,
    pathway_gates,
    physician,
    product_state,
    regulatory_clocks,
    skipped_steps,
)
from oos_notify.incidents.planning import (
    IncidentFacts,
    PlanResult,
    derive_severity,
    plan_decision_overdue,
    plan_decision_reminders,
    plan_decision_request,
    plan_follow_up,
    plan_key_date_steps,
    plan_opening,
    plan_round_again,
)
from oos_notify.store import audit, locks, outbox
from oos_notify.store.instants import UtcInstant
from oos_notify.store.lifecycle import Condition, IncidentStatus, NotificationKind, can_move
from oos_notify.store.models import Event, Incident, Notification
from oos_notify.store.outbox import Addressee, PlannedNotification
from oos_notify.texts import storable

Reference = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
]
ShortText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(storable)]
KeyDateValue = Annotated[date, Field(ge=date(2000, 1, 1), le=date(2100, 12, 31))]
"""A treatment date; outside these years it is a typo, and near year 1 planning cannot count
back from it (the fuzzer found the 500)."""


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class FailedAttribute(_Input):
    attribute: ShortText
    specification: ShortText
    result: ShortText
    method: ShortText | None = None


class QaContact(_Input):
    """Who the center asks, and to whom the service sends its receipts: the name and address go
    into a To header, so each is checked as one line and one mailbox."""

    name: Name
    email: Address
    phone: Annotated[str, Field(max_length=40, pattern=r"^[0-9+()./ -]+$")] | None = None


class TreatingPhysician(_Input):
    """The patient's own physician, who need not be a contact of the site: a clinician's name
    and address, never the patient's."""

    name: Name
    email: Address
    phone: Annotated[str, Field(max_length=40, pattern=r"^\+?[0-9][0-9 ()./-]*$")] | None = None


class ChecklistConfirmation(_Input):
    """QA's word that one item of the OOS-acceptance checklist is on file, and where."""

    item: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    reference: Reference
    """The document's number in the manufacturer's or the center's records."""


class Remanufacture(_Input):
    """What re-manufacture means for the patient: unknown facts are left out, not guessed."""

    new_apheresis_needed: bool | None = None
    expected_release: KeyDateValue | None = None
    bridging_therapy_needed: bool | None = None


class WithinSpecBasis(_Input):
    """Why a lot that failed is released within specification after all: the laboratory cause
    that invalidated the failing result, and the new certificate of analysis."""

    assignable_cause: Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(storable)]
    certificate_of_analysis: Reference


class EventIn(_Input):
    """One event about one incident, as manufacturer QA posts it: identifiers, no patient data."""

    event_id: Reference
    type: EventType
    incident_ref: Reference
    occurred_at: UtcInstant
    center_id: Reference
    product_code: Reference | None = None
    lot_number: Reference | None = None
    chain_of_identity: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{3,64}$")] | None = None
    severity: Severity | None = None
    failed_attributes: Annotated[list[FailedAttribute], Field(max_length=50)] = []
    disposition: Disposition | None = None
    key_dates: dict[KeyDate, KeyDateValue] = {}
    summary: Annotated[str, Field(max_length=4000), AfterValidator(storable)] | None = None
    qa_contact: QaContact | None = None
    product_status: ProductStatus | None = None
    """Where the product is: a late result after infusion asks for the patient to be assessed,
    before it for the product to be quarantined."""
    infused_at: UtcInstant | None = None
    indication: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")] | None = None
    """What the patient is treated for, as the product's config names it: which of the label's
    infusion windows the messages cite."""
    oos_pathway: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")] | None = None
    """With ``oos_release_offered``: the regulatory pathway, when not the center's own."""
    oos_checklist: Annotated[list[ChecklistConfirmation], Field(max_length=20)] = []
    remanufacture: Remanufacture | None = None
    within_spec_basis: WithinSpecBasis | None = None
    treating_physician: TreatingPhysician | None = None
    """Told first and asked to decide; named by the event that opens the incident."""
    drill: bool = False
    """A practice incident, said by the event that opens it: real contacts, DRILL on every
    message, no patient liaison, and its own report instead of the real ones."""

    def body_hash(self) -> str:
        """The same event, however its JSON was spaced or ordered, hashes the same."""
        # Fields added after events were first stored stay out of the hash while empty, so an
        # event stored before they existed is recognised when it is posted again.
        empty = {name for name in ADDED_FIELDS if getattr(self, name) in (None, [], False)}
        body = self.model_dump(mode="json", exclude=empty)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


ADDED_FIELDS = (
    "product_status",
    "infused_at",
    "indication",
    "oos_pathway",
    "oos_checklist",
    "remanufacture",
    "within_spec_basis",
    "treating_physician",
    "drill",
)


class ScheduledOut(BaseModel):
    notification_id: str
    recipient: str
    role: str
    template: str
    due_at: datetime


class EventAccepted(BaseModel):
    incident_id: str
    event_id: str
    duplicate: bool
    status: IncidentStatus
    scheduled: list[ScheduledOut]


@dataclass(frozen=True)
class IngestResult:
    answer: EventAccepted
    schedules_now: bool
    """Whether a notification is due at once, so the dispatcher should be woken."""


def _shape_errors(event: EventIn) -> list[tuple[str, str, str]]:
    """Fields a given event type needs, beyond what the schema alone can say."""
    errors: list[tuple[str, str, str]] = []
    if event.type in OPENING_EVENT_TYPES:
        for name in ("product_code", "lot_number", "chain_of_identity"):
            if getattr(event, name) is None:
                errors.append((name, f"required for a {event.type} event", "missing"))
        if not event.failed_attributes:
            errors.append(
                ("failed_attributes", f"a {event.type} event names at least one", "missing")
            )
    if event.type is EventType.DISPOSITION and event.disposition in (
        None,
        Disposition.UNDER_INVESTIGATION,
    ):
        choices = ", ".join(d for d in Disposition if d is not Disposition.UNDER_INVESTIGATION)
        errors.append(("disposition", f"a disposition event says which one: {choices}", "missing"))
    return errors + _product_errors(event)


def _product_errors(event: EventIn) -> list[tuple[str, str, str]]:
    """The product's state must be consistent: an infusion has a time, and comes after release."""
    errors: list[tuple[str, str, str]] = []
    infused = event.product_status is ProductStatus.INFUSED
    if infused and event.infused_at is None:
        errors.append(("infused_at", "required when product_status is infused", "missing"))
    if event.infused_at is not None and not infused:
        errors.append(("infused_at", "goes with product_status infused", "unexpected"))
    if event.infused_at is not None and event.infused_at > event.occurred_at:
        errors.append(("infused_at", "is after the event's occurred_at", "invalid"))
    if infused and event.type is EventType.RELEASE_FAILURE:
        errors.append(
            (
                "product_status",
                "a release_failure comes before release: a result after infusion is a late_result",
                "invalid",
            )
        )
    for name, disposition in (
        ("oos_pathway", Disposition.OOS_RELEASE_OFFERED),
        ("within_spec_basis", Disposition.RELEASED_WITHIN_SPEC),
    ):
        if getattr(event, name) is not None and event.disposition is not disposition:
            errors.append((name, f"goes with disposition {disposition}", "unexpected"))
    return errors


def ingest(
    session: Session,
    event: EventIn,
    agreements: Agreements,
    now: datetime,
    mail_domain: str,
    template_versions: Mapping[str, str] | None = None,
) -> IngestResult:
    """Record an event; open or update its incident; schedule what the agreement says.
    ``template_versions`` names each center's stored template set, kept with a new incident."""
    body_hash = event.body_hash()
    locks.one_at_a_time(session, "incident_ref", event.incident_ref)
    earlier = _received(session, event.event_id)
    if earlier is not None:
        return _repeat(earlier, body_hash)

    errors = _shape_errors(event)
    if event.center_id not in agreements.center_ids():
        errors.append(("center_id", f"unknown center {event.center_id!r}", "unknown_center"))
    if event.product_code is not None and agreements.product(event.product_code) is None:
        errors.append(
            ("product_code", f"unknown product {event.product_code!r}", "unknown_product")
        )
    incident = session.exec(
        select(Incident).where(Incident.incident_ref == event.incident_ref)
    ).first()
    errors += product_state.event_errors(event, incident, agreements)
    if incident is None and event.type not in OPENING_EVENT_TYPES:
        errors.append(
            (
                "incident_ref",
                f"no incident {event.incident_ref!r}: an incident opens with a "
                "release_failure or late_result event",
                "unknown_incident",
            )
        )
    if errors:
        raise InvalidFields(errors)

    try:
        template_version = (template_versions or {}).get(event.center_id)
        answer = _apply(
            session, event, incident, agreements, now, mail_domain, body_hash, template_version
        )
    except IntegrityError:
        # A concurrent request with the same event_id or incident_ref committed first.
        session.rollback()
        earlier = _received(session, event.event_id)
        if earlier is not None:
            return _repeat(earlier, body_hash)
        raise Conflict(
            f"incident {event.incident_ref!r} was opened by a concurrent event; send this one again"
        ) from None
    return IngestResult(answer, schedules_now=any(s.due_at <= now for s in answer.scheduled))


def _apply(
    session: Session,
    event: EventIn,
    incident: Incident | None,
    agreements: Agreements | None,
    now: datetime,
    mail_domain: str,
    body_hash: str,
    template_version: str | None,
    actor: str = "manufacturer",
) -> EventAccepted:
    opened = incident is None
    if incident is None:
        assert agreements is not None
        agreement = agreements.effective(event.center_id)
        incident, scheduled = _open(
            session, event, agreement, agreements, now, mail_domain, template_version
        )
    else:
        scheduled = _follow_up(session, incident, event, agreements, now, mail_domain, actor)
    scheduled += [
        ScheduledOut(
            notification_id=notification_id,
            recipient=item.recipient_email,
            role=item.role,
            template=item.template,
            due_at=item.due_at,
        )
        for notification_id, item in clock_rules.after_change(
            session, incident, now, mail_domain, opened
        )
    ]
    answer = EventAccepted(
        incident_id=incident.id,
        event_id=event.event_id,
        duplicate=False,
        status=IncidentStatus(incident.status),
        scheduled=scheduled,
    )
    session.execute(
        _EVENTS.insert(),
        {
            "event_id": event.event_id,
            "incident_id": incident.id,
            "type": event.type,
            "occurred_at": event.occurred_at,
            "received_at": now,
            "body_hash": body_hash,
            "payload": event.model_dump(mode="json"),
            "response": answer.model_dump(mode="json"),
        },
    )
    audit.record(
        session,
        now,
        "event_received",
        actor,
        incident_id=incident.id,
        event_id=event.event_id,
        type=event.type,
    )
    session.flush()
    return answer


_EVENTS = Event.__table__  # type: ignore[attr-defined]
_INCIDENTS = Incident.__table__  # type: ignore[attr-defined]
"""Core statements for the rows every opening event writes once and never changes in the same
transaction: the ORM's unit of work cost more than the inserts themselves."""


def center_update(
    session: Session,
    incident: Incident,
    key_dates: Mapping[KeyDate, date],
    product_status: ProductStatus | None,
    actor: str,
    now: datetime,
    mail_domain: str,
) -> EventAccepted:
    """A center's own word on its dates or its product (from its link or a reply), applied as
    an ``update`` event from QA would be: the facts change, severity and steps are planned
    again, everyone told hears of it. The timeline names ``actor``, the center's contact."""
    event = EventIn(
        event_id=new_id("ctr"),
        type=EventType.UPDATE,
        incident_ref=incident.incident_ref,
        occurred_at=now,
        center_id=incident.center_id,
        key_dates=dict(key_dates),
        product_status=product_status,
    )
    locks.one_at_a_time(session, "incident_ref", incident.incident_ref)
    return _apply(session, event, incident, None, now, mail_domain, event.body_hash(), None, actor)


def _received(session: Session, event_id: str) -> Row[Any] | None:
    """The event received earlier under ``event_id`` (its id, body hash and response), if any."""
    columns = (_EVENTS.c.event_id, _EVENTS.c.body_hash, _EVENTS.c.response)
    return session.execute(sa_select(*columns).where(_EVENTS.c.event_id == event_id)).first()


def _repeat(earlier: Row[Any], body_hash: str) -> IngestResult:
    if earlier.body_hash != body_hash:
        raise Conflict(
            f"event_id {earlier.event_id!r} was already received with a different body; "
            "use a new event_id for a new event"
        )
    answer = EventAccepted.model_validate({**earlier.response, "duplicate": True})
    return IngestResult(answer, schedules_now=False)


def _open(
    session: Session,
    event: EventIn,
    agreement: EffectiveAgreement,
    agreements: Agreements,
    now: datetime,
    mail_domain: str,
    template_version: str | None,
) -> tuple[Incident, list[ScheduledOut]]:
    assert event.product_code and event.lot_number and event.chain_of_identity
    if event.oos_checklist or event.remanufacture:
        raise InvalidFields(
            [
                (
                    "oos_checklist" if event.oos_checklist else "remanufacture",
                    "follows up an incident with its disposition: send it in a later event",
                    "unexpected",
                )
            ]
        )
    named = event.treating_physician
    treating = named.model_dump(mode="json") if named else None
    person = physician.addressee(treating)
    opening_offer = _opening_offer(event, agreement, agreements, person, now)
    calendar = CenterCalendar.of(agreement)
    severity, rule = _severity(event, agreement, calendar, event.key_dates, now)
    promise = agreement.notify_within.get(severity)
    incident = Incident(
        id=new_id("inc"),
        incident_ref=event.incident_ref,
        center_id=event.center_id,
        product_code=event.product_code,
        lot_number=event.lot_number,
        chain_of_identity=event.chain_of_identity,
        opening_type=event.type,
        plan_type=event.type,
        severity=severity,
        severity_rule=rule,
        status=IncidentStatus.NOTIFYING,
        disposition=event.disposition,
        failed_attributes=[a.model_dump(mode="json") for a in event.failed_attributes],
        key_dates={k.value: v.isoformat() for k, v in event.key_dates.items()},
        summary=event.summary,
        qa_contact=event.qa_contact.model_dump(mode="json") if event.qa_contact else None,
        product_status=event.product_status,
        infused_at=event.infused_at,
        indication=event.indication,
        within_spec_basis=event.within_spec_basis.model_dump(mode="json")
        if event.within_spec_basis
        else None,
        oos_release=opening_offer.record if opening_offer else None,
        treating_physician=treating,
        agreement_version=agreement.version(),
        agreement=agreement.snapshot(),
        agreements_version_id=agreements.version_id,
        template_version=template_version,
        opened_at=now,
        updated_at=now,
        escalation_started_at=now,
        notify_deadline=(
            business_time.add(now, promise, calendar, business_hours=False) if promise else None
        ),
        drill=event.drill,
    )
    # Inserted at once (the rows that follow reference it) and not tracked by the session:
    # nothing in this transaction changes it again.
    session.execute(_INCIDENTS.insert(), incident.model_dump())
    audit.record(
        session,
        now,
        "incident_opened",
        "manufacturer",
        incident_id=incident.id,
        incident_ref=incident.incident_ref,
        center_id=incident.center_id,
        severity=severity,
        severity_rule=rule,
        agreement_version=incident.agreement_version,
        agreements_version=agreements.version_id,
        template_version=template_version,
        plan=agreement.plans[EventType(event.type)].id,
        notify_deadline=incident.notify_deadline.isoformat() if incident.notify_deadline else None,
        product_status=event.product_status,
        drill=event.drill,
    )
    facts = IncidentFacts(event.type, severity, event.key_dates)
    result = plan_opening(agreement, facts, now)
    extra = [result]
    if person is not None:
        extra.append(physician.plan_steps(agreement, facts, person, now))
    if opening_offer is not None:
        source = opening_offer.source
        extra.append(plan_decision_request(source.agreement, source.rule, source.asked, facts, now))
    result = PlanResult(
        [n for r in extra for n in r.notifications], [k for r in extra for k in r.skipped]
    )
    scheduled = schedule_plan(session, incident, result, now, mail_domain)
    clocks = regulatory_clocks.start(
        session, incident, agreement, event.occurred_at, now, mail_domain
    )
    return incident, scheduled + _scheduled_out(clocks)


def _opening_offer(
    event: EventIn,
    agreement: EffectiveAgreement,
    agreements: Agreements,
    person: Addressee | None,
    now: datetime,
) -> _Offer | None:
    """An incident opened already offering an OOS product asks its deciders at once, as a
    disposition event offering it would; checked before anything is written."""
    if event.disposition is not Disposition.OOS_RELEASE_OFFERED:
        return None
    source = offers.decision_source(agreement, agreements, event.type, person)
    pathway = offers.pathway_for(event.oos_pathway, agreement, agreements, None)
    return _Offer(source, offers.new_offer(pathway, source, None, now))


def _severity(
    event: EventIn,
    agreement: EffectiveAgreement,
    calendar: CenterCalendar,
    key_dates: Mapping[KeyDate, date],
    now: datetime,
) -> tuple[Severity, str | None]:
    """The event's own severity, else the one the agreement's rules derive (with the rule)."""
    if event.severity is not None:
        return event.severity, None
    attributes = (a.attribute for a in event.failed_attributes)
    rules = agreement.severity_rules
    return derive_severity(rules, event.type, attributes, key_dates, calendar, now)


def schedule_plan(
    session: Session,
    incident: Incident,
    result: PlanResult,
    now: datetime,
    mail_domain: str,
    extra: Sequence[PlannedNotification] = (),
) -> list[ScheduledOut]:
    """Write what planning produced, and say in the audit trail which steps it had to skip."""
    skipped_steps.record(session, incident.id, result.skipped, now)
    planned = [*result.notifications, *extra]
    return _scheduled_out(outbox.schedule(session, incident.id, planned, now, mail_domain))


def _scheduled_out(scheduled: Sequence[tuple[str, PlannedNotification]]) -> list[ScheduledOut]:
    return [
        ScheduledOut(
            notification_id=notification_id,
            recipient=item.recipient_email,
            role=item.role,
            template=item.template,
            due_at=item.due_at,
        )
        for notification_id, item in scheduled
    ]


def _follow_up(
    session: Session,
    incident: Incident,
    event: EventIn,
    agreements: Agreements | None,
    now: datetime,
    mail_domain: str,
    actor: str = "manufacturer",
) -> list[ScheduledOut]:
    """Apply a follow-up to an incident: update its facts, re-plan what they change, tell
    everyone already told, and close the incident where the event ends it (or reopen a
    resolved one for a late result)."""
    status = IncidentStatus(incident.status)
    reopening = status is IncidentStatus.RESOLVED and event.type is EventType.LATE_RESULT
    if status.is_closed and not reopening:
        hint = (
            "; a late result for it opens a new incident under a new incident_ref"
            if status is IncidentStatus.WITHDRAWN and event.type is EventType.LATE_RESULT
            else ""
        )
        raise Conflict(
            f"incident {incident.incident_ref!r} is {status}; it accepts no further events{hint}"
        )
    if event.center_id != incident.center_id:
        raise Conflict(
            f"incident {incident.incident_ref!r} belongs to center {incident.center_id!r}, "
            f"not {event.center_id!r}"
        )
    if event.type is EventType.RELEASE_FAILURE:
        raise Conflict(
            f"incident {incident.incident_ref!r} is already open; "
            "send an update or late_result event for new facts"
        )
    if event.drill and not incident.drill:
        raise InvalidFields(
            [("drill", "marks the event that opens a drill; this incident is real", "unexpected")]
        )
    agreement = EffectiveAgreement.stored(incident.agreement)
    offer = _offer(event, incident, agreement, agreements, now)
    _check_follow_up(event, incident, offer)
    told = outbox.told(session, incident.id)
    if reopening:
        _reopen(session, incident, now)
    moved = _update_facts(session, incident, event, offer, now, actor)
    result = PlanResult([], [])
    if event.type is EventType.LATE_RESULT:
        result = _restart_escalation(session, incident, event, agreement, now)
    elif event.type in (EventType.UPDATE, EventType.DISPOSITION):
        result = _replan(session, incident, event, agreement, moved, now, actor)
    elif event.type in CLOSING:
        _close(session, incident, CLOSING[event.type], now)
    if offer is not None:
        asking = plan_decision_request(
            offer.source.agreement, offer.source.rule, offer.source.asked, _facts(incident), now
        )
        result = PlanResult(
            [*result.notifications, *asking.notifications], [*result.skipped, *asking.skipped]
        )
    starting_now = {n.recipient_email.lower() for n in result.notifications if n.due_at <= now}
    notices = plan_follow_up(event.type, told, now, told_otherwise=starting_now)
    incident.updated_at = now
    session.add(incident)
    scheduled = schedule_plan(session, incident, result, now, mail_domain, notices)
    if event.type is EventType.WITHDRAWN:
        return scheduled
    clocks = regulatory_clocks.start(
        session, incident, agreement, event.occurred_at, now, mail_domain
    )
    return scheduled + _scheduled_out(clocks)


@dataclass(frozen=True)
class _Offer:
    """An out-of-specification product offered for release by this event."""

    source: offers.DecisionSource
    record: dict[str, Any]
    """What the incident keeps of it (``Incident.oos_release``)."""


def _offer(
    event: EventIn,
    incident: Incident,
    agreement: EffectiveAgreement,
    agreements: Agreements | None,
    now: datetime,
) -> _Offer | None:
    """The offer this event makes, checked before anything is written: who decides, and under
    which regulatory pathway. None when the event offers nothing."""
    if not (
        event.type is EventType.DISPOSITION and event.disposition is Disposition.OOS_RELEASE_OFFERED
    ):
        return None
    assert agreements is not None  # only a center's own update comes without them
    source = offers.decision_source(
        agreement,
        agreements,
        EventType(incident.plan_type),
        physician.addressee(incident.treating_physician),
    )
    pathway = offers.pathway_for(event.oos_pathway, agreement, agreements, incident.oos_release)
    return _Offer(source, offers.new_offer(pathway, source, incident.oos_release, now))


def _check_follow_up(event: EventIn, incident: Incident, offer: _Offer | None) -> None:
    """What a follow-up may say given the incident's state; nothing is written before this."""
    errors: list[tuple[str, str, str]] = []
    disposition = event.disposition or incident.disposition
    named = event.treating_physician.model_dump(mode="json") if event.treating_physician else None
    if named is not None and named != incident.treating_physician:
        errors.append(
            (
                "treating_physician",
                "is named by the event that opens the incident and cannot change in a follow-up",
                "unexpected",
            )
        )
    if event.remanufacture is not None and disposition != Disposition.REMANUFACTURE:
        errors.append(("remanufacture", "goes with disposition remanufacture", "unexpected"))
    checklist = offer.record if offer is not None else incident.oos_release
    if event.oos_checklist:
        if checklist is None or disposition != Disposition.OOS_RELEASE_OFFERED:
            errors.append(
                (
                    "oos_checklist",
                    "confirms the checklist of an out-of-specification product offered for "
                    "release; this incident has no such offer",
                    "unexpected",
                )
            )
        else:
            for index, item in offers.unknown_items(
                checklist, (c.item for c in event.oos_checklist)
            ):
                known = ", ".join(i["id"] for i in checklist["items"])
                errors.append(
                    (
                        f"oos_checklist.{index}.item",
                        f"{item!r} is not on the {checklist['pathway']} checklist; known: {known}",
                        "unknown",
                    )
                )
    if errors:
        raise InvalidFields(errors)
    _check_gates(event, incident, checklist, disposition)


def _check_gates(
    event: EventIn,
    incident: Incident,
    offer: dict[str, Any] | None,
    disposition: str | None,
) -> None:
    """A transition of the offered product (shipped, infused, resolved) is recorded only with
    the checklist items it is gated by on file: 21 CFR 50.20, 56.103 and 312.305 want consent,
    IRB approval and the IND before treatment, EU GMP Part IV 11.5 the risk evaluation and the
    physician's request before supply."""
    if offer is None or not pathway_gates.applies(offer, disposition, incident.decision):
        return
    before = ProductStatus(incident.product_status) if incident.product_status else None
    transitions = pathway_gates.recorded(
        before, event.product_status, resolving=event.type is EventType.RESOLVED
    )
    gates = pathway_gates.gates_checked(transitions, _went_ahead(event, incident))
    confirming = (c.item for c in event.oos_checklist)
    outstanding = pathway_gates.open_items(offer, gates, confirming)
    if outstanding:
        latest = max(transitions, key=GATED_TRANSITIONS.index)
        raise Conflict(pathway_gates.refusal(incident.incident_ref, offer, latest, outstanding))


def _went_ahead(event: EventIn, incident: Incident) -> bool:
    """An accepted product recorded as infused resolves only with its whole checklist on file;
    an offer that did not go ahead closes with the items gating the resolution alone."""
    infused = (event.product_status or incident.product_status) == ProductStatus.INFUSED
    return infused and incident.decision == AckResponse.ACCEPT_OOS_PRODUCT


PLAN_STEP_KINDS = [NotificationKind.ESCALATION.value, NotificationKind.PATIENT.value]
"""What a restarted escalation replaces: the old plan's steps, not receipts or notices."""

CLOSING = {
    EventType.RESOLVED: IncidentStatus.RESOLVED,
    EventType.WITHDRAWN: IncidentStatus.WITHDRAWN,
}


def _update_facts(
    session: Session,
    incident: Incident,
    event: EventIn,
    offer: _Offer | None,
    now: datetime,
    actor: str = "manufacturer",
) -> set[KeyDate]:
    """Write the event's new facts on the incident; return the key dates that changed."""
    changed: dict[str, Any] = {}
    if event.disposition is not None and event.disposition != incident.disposition:
        changed["disposition"] = event.disposition.value
        if incident.disposition == Disposition.OOS_RELEASE_OFFERED:
            outbox.cancel_pending(
                session,
                incident.id,
                now,
                "the product is no longer offered for a decision",
                col(Notification.condition) == Condition.UNDECIDED.value,
            )
        incident.disposition = event.disposition
    moved = {
        key
        for key, day in event.key_dates.items()
        if incident.key_dates.get(key.value) != day.isoformat()
    }
    if moved:
        changed["key_dates"] = {k.value: event.key_dates[k].isoformat() for k in sorted(moved)}
        incident.key_dates = {
            **incident.key_dates,
            **{k.value: v.isoformat() for k, v in event.key_dates.items()},
        }
    if event.failed_attributes:
        changed["failed_attributes"] = len(event.failed_attributes)
        incident.failed_attributes = [
            *incident.failed_attributes,
            *(a.model_dump(mode="json") for a in event.failed_attributes),
        ]
    if event.summary is not None and event.summary != incident.summary:
        changed["summary"] = True
        incident.summary = event.summary
    changed |= _update_product(incident, event, offer, now)
    if changed:
        audit.record(
            session,
            now,
            "incident_updated",
            actor,
            incident_id=incident.id,
            event_type=event.type,
            **changed,
        )
    return moved


def _update_product(
    incident: Incident, event: EventIn, offer: _Offer | None, now: datetime
) -> dict[str, Any]:
    """The product's state, the offer and its checklist, the re-manufacture facts and the basis
    of a release within specification; returns what changed, for the audit trail."""
    changed: dict[str, Any] = {}
    if event.product_status is not None and event.product_status != incident.product_status:
        changed["product_status"] = event.product_status.value
        incident.product_status = event.product_status
    if event.infused_at is not None and event.infused_at != incident.infused_at:
        changed["infused_at"] = event.infused_at.isoformat()
        incident.infused_at = event.infused_at
    if event.indication is not None and event.indication != incident.indication:
        changed["indication"] = event.indication
        incident.indication = event.indication
    if offer is not None:
        changed["oos_pathway"] = offer.record["pathway"]
        incident.oos_release = offer.record
    if event.oos_checklist:
        assert incident.oos_release is not None  # checked by _check_follow_up
        confirmations = [(c.item, c.reference) for c in event.oos_checklist]
        incident.oos_release = offers.confirm(incident.oos_release, confirmations, now)
        changed["oos_checklist"] = dict(confirmations)
    if event.remanufacture is not None:
        given = event.remanufacture.model_dump(mode="json", exclude_none=True)
        incident.remanufacture = {**(incident.remanufacture or {}), **given}
        changed["remanufacture"] = given
    if event.within_spec_basis is not None:
        incident.within_spec_basis = event.within_spec_basis.model_dump(mode="json")
        changed["within_spec_basis"] = incident.within_spec_basis
    return changed


def _facts(incident: Incident) -> IncidentFacts:
    return IncidentFacts(
        EventType(incident.plan_type),
        Severity(incident.severity),
        {KeyDate(k): date.fromisoformat(v) for k, v in incident.key_dates.items()},
    )


def _reopen(session: Session, incident: Incident, now: datetime) -> None:
    """A result that ends after the closing (a 14-day sterility culture) reopens the incident."""
    audit.record(
        session,
        now,
        "incident_reopened",
        "manufacturer",
        incident_id=incident.id,
        closed_at=incident.closed_at.isoformat() if incident.closed_at else None,
    )
    incident.closed_at = None


def _restart_escalation(
    session: Session,
    incident: Incident,
    event: EventIn,
    agreement: EffectiveAgreement,
    now: datetime,
) -> PlanResult:
    """A late result is news the center must confirm again: the escalation starts over under
    the center's plan for late results, with the severity the result calls for."""
    facts = _facts(incident)
    severity, rule = _severity(event, agreement, CenterCalendar.of(agreement), facts.key_dates, now)
    if SEVERITY_ORDER.index(severity) < SEVERITY_ORDER.index(Severity(incident.severity)):
        incident.severity, incident.severity_rule = severity, rule
    outbox.cancel_pending(
        session,
        incident.id,
        now,
        "a late result restarted the escalation",
        col(Notification.kind).in_(PLAN_STEP_KINDS),
    )
    audit.record(
        session,
        now,
        "escalation_restarted",
        "manufacturer",
        incident_id=incident.id,
        status_from=incident.status,
        status_to=IncidentStatus.NOTIFYING.value,
        severity=incident.severity,
        severity_rule=incident.severity_rule,
        plan=agreement.plans[EventType.LATE_RESULT].id,
        round=incident.ack_round + 1,
    )
    incident.status = IncidentStatus.NOTIFYING
    incident.plan_type = EventType.LATE_RESULT
    incident.escalation_level = 0
    incident.ack_round += 1
    incident.escalation_started_at = now
    opening = plan_opening(agreement, _facts(incident), now)
    steps = physician.restart(session, incident, agreement, _facts(incident), now)
    return PlanResult(
        [*opening.notifications, *steps.notifications], [*opening.skipped, *steps.skipped]
    )


def _replan(
    session: Session,
    incident: Incident,
    event: EventIn,
    agreement: EffectiveAgreement,
    moved: set[KeyDate],
    now: datetime,
    actor: str = "manufacturer",
) -> PlanResult:
    """New facts may make the incident more severe (lymphodepletion moved within 72 hours): then
    the unconfirmed escalation runs again on the faster clock. Steps due before a key date that
    moved follow it either way, the decision deadline too."""
    if _rederive_severity(session, incident, event, agreement, now, actor):
        return replan_faster(session, incident, agreement, moved, now)
    if not moved:
        return PlanResult([], [])
    started = incident.escalation_started_at or incident.opened_at
    result = _move_key_date_steps(session, incident, agreement, moved, started, now)
    return _and_what_follows(session, incident, agreement, moved, started, now, result)


def replan_faster(
    session: Session,
    incident: Incident,
    agreement: EffectiveAgreement,
    moved: set[KeyDate],
    now: datetime,
) -> PlanResult:
    """The incident's severity has just risen (by an event, or by the clock crossing a rule's
    threshold): the unconfirmed escalation runs again on the faster clock, steps before a key
    date that moved follow it, and a decision deadline kept in business hours is planned again
    by the new severity's clock."""
    acknowledged = incident.status == IncidentStatus.ACKNOWLEDGED
    started = incident.escalation_started_at or incident.opened_at
    if not acknowledged:
        outbox.cancel_pending(
            session,
            incident.id,
            now,
            f"the incident became {incident.severity}: its escalation runs on a faster clock",
            col(Notification.kind).in_(PLAN_STEP_KINDS),
            col(Notification.condition) == Condition.UNACKNOWLEDGED.value,
        )
        sent = outbox.sent_steps(session, incident.id, since=started)
        result = plan_round_again(agreement, _facts(incident), started, sent, now)
        if moved:  # the acknowledged steps before a moved date are not part of the round
            outbox.cancel_pending(
                session,
                incident.id,
                now,
                "its key date moved",
                col(Notification.anchor).in_([k.value for k in moved]),
                col(Notification.kind) == NotificationKind.DECISION_OVERDUE.value,
            )
    elif moved:
        result = _move_key_date_steps(session, incident, agreement, moved, started, now)
    else:
        result = PlanResult([], [])
    return _and_what_follows(session, incident, agreement, moved, started, now, result, rose=True)


def _and_what_follows(
    session: Session,
    incident: Incident,
    agreement: EffectiveAgreement,
    moved: set[KeyDate],
    started: datetime,
    now: datetime,
    result: PlanResult,
    rose: bool = False,
) -> PlanResult:
    """``result`` with what follows a re-plan: the decision deadline and its reminders, and the
    treating physician's own steps before a key date that moved."""
    overdue = _decision_deadline_again(session, incident, agreement, moved, started, now, rose)
    facts = _facts(incident)
    steps = physician.move_steps(session, incident, agreement, facts, moved, started, now)
    parts = (result, overdue, steps)
    return PlanResult(
        [n for part in parts for n in part.notifications],
        [k for part in parts for k in part.skipped],
    )


def _rederive_severity(
    session: Session,
    incident: Incident,
    event: EventIn,
    agreement: EffectiveAgreement,
    now: datetime,
    actor: str = "manufacturer",
) -> bool:
    """Severity follows the facts on every update: the rules are applied again to the incident
    as it is now, and the event's own severity counts too. It only rises on its own: a slower
    clock is never chosen for the patient by a rule. Returns whether it rose."""
    facts = _facts(incident)
    attributes = (a["attribute"] for a in incident.failed_attributes)
    calendar = CenterCalendar.of(agreement)
    current = (Severity(incident.severity), incident.severity_rule)
    derived = derive_severity(
        agreement.severity_rules, facts.event_type, attributes, facts.key_dates, calendar, now
    )
    candidates = [current, derived]
    if event.severity is not None:
        candidates.append((event.severity, None))
    severity, rule = min(candidates, key=lambda c: SEVERITY_ORDER.index(c[0]))
    if severity is current[0]:
        return False
    audit.record(
        session,
        now,
        "severity_changed",
        actor,
        incident_id=incident.id,
        event_type=event.type,
        severity_from=incident.severity,
        severity_to=severity,
        severity_rule=rule,
    )
    incident.severity, incident.severity_rule = severity, rule
    return True


def _move_key_date_steps(
    session: Session,
    incident: Incident,
    agreement: EffectiveAgreement,
    moved: set[KeyDate],
    started: datetime,
    now: datetime,
) -> PlanResult:
    """Steps due before a key date follow it when it moves (or plan once it is known)."""
    outbox.cancel_pending(
        session,
        incident.id,
        now,
        "its key date moved",
        col(Notification.anchor).in_([k.value for k in moved]),
    )
    return plan_key_date_steps(
        agreement,
        _facts(incident),
        moved,
        acknowledged=incident.status == IncidentStatus.ACKNOWLEDGED,
        sent=outbox.sent_steps(session, incident.id, since=started),
        now=now,
    )


def _decision_deadline_again(
    session: Session,
    incident: Incident,
    agreement: EffectiveAgreement,
    moved: set[KeyDate],
    started: datetime,
    now: datetime,
    rose: bool = False,
) -> PlanResult:
    """A decision still missing keeps its deadline before the key date it counts back from, and
    a deadline kept in business hours is counted again from the offer when the severity ``rose``
    to critical, whose clock counts every hour (unless the plan keeps business hours for it)."""
    offer = incident.oos_release
    if (
        offer is None
        or incident.decision is not None
        or incident.disposition != Disposition.OOS_RELEASE_OFFERED
    ):
        return PlanResult([], [])
    rule = offers.stored_rule(offer)
    plan = agreement.plans[EventType(incident.plan_type)]
    recount = (
        rose
        and rule.due is not None
        and rule.due.business_hours
        and incident.severity == Severity.CRITICAL
        and not plan.critical_uses_business_hours
    )
    if rule.due is None or (not moved and not recount):
        return PlanResult([], [])
    asked, facts = offers.stored_asked(offer), _facts(incident)
    sent = outbox.sent_steps(session, incident.id)
    reminders = PlanResult([], [])
    if moved:
        outbox.cancel_pending(
            session,
            incident.id,
            now,
            "its key date moved",
            col(Notification.anchor).in_([k.value for k in moved]),
            col(Notification.kind) == NotificationKind.DECISION.value,
            col(Notification.condition) == Condition.UNDECIDED.value,
        )
        reminders = plan_decision_reminders(
            agreement, rule, asked, facts, now, only_before=moved, sent=sent
        )
    if (rule.due.before not in moved and not recount) or (
        NotificationKind.DECISION_OVERDUE,
        0,
    ) in sent:
        return reminders
    offered_at = now
    if recount:
        offered_at = _offered_at(session, incident.id) or now
        outbox.cancel_pending(
            session,
            incident.id,
            now,
            f"the incident became {incident.severity}: its decision deadline counts every hour",
            col(Notification.kind) == NotificationKind.DECISION_OVERDUE.value,
        )
    planned = plan_decision_overdue(agreement, rule, asked, facts, offered_at)
    return PlanResult(
        [
            *[replace(n, due_at=max(n.due_at, now)) for n in planned.notifications],
            *reminders.notifications,
        ],
        [*planned.skipped, *reminders.skipped],
    )


def _offered_at(session: Session, incident_id: str) -> datetime | None:
    """When the product was last offered for a decision: when its deciders were asked."""
    return session.exec(
        select(func.max(Notification.created_at)).where(
            Notification.incident_id == incident_id,
            Notification.kind == NotificationKind.DECISION.value,
        )
    ).one()


def _close(session: Session, incident: Incident, target: IncidentStatus, now: datetime) -> None:
    assert can_move(IncidentStatus(incident.status), target)  # every open status may close
    audit.record(
        session,
        now,
        "incident_status_changed",
        "manufacturer",
        incident_id=incident.id,
        status_from=incident.status,
        status_to=target,
    )
    incident.status = target
    incident.closed_at = now
    # A report owed to an authority is owed after the resolution too; a withdrawal (an
    # incident posted in error) owes nothing.
    keep = (
        [col(Notification.kind) != NotificationKind.REGULATORY_CLOCK.value]
        if target is IncidentStatus.RESOLVED
        else []
    )
    outbox.cancel_pending(session, incident.id, now, f"incident {target}", *keep)
