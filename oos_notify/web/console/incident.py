"""One incident as the console shows it: its facts, a timeline of everything that happened and
is due, the follow-ups QA posts (through ``incidents.events.ingest``, as the API does), and
each scheduled email as it would be sent."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup
from pydantic import ValidationError
from sqlmodel import Session, col, select

from oos_notify.agreements.config import Agreements, EffectiveAgreement
from oos_notify.agreements.vocabulary import (
    AckResponse,
    Disposition,
    EventType,
    KeyDate,
    ProductStatus,
)
from oos_notify.delivery import messaging
from oos_notify.delivery.rendering import (
    DISPOSITION_LABELS,
    KEY_DATE_LABELS,
    AckLinkView,
    RenderedMessage,
    Renderer,
)
from oos_notify.errors import InvalidFields
from oos_notify.incidents import events, offers, queries, revisions
from oos_notify.incidents.acknowledgement import AckTokens, audit_action
from oos_notify.incidents.events import EventIn, IngestResult
from oos_notify.incidents.queries import CallbackTask, OosReleaseOut
from oos_notify.incidents.revisions import ProposalOut
from oos_notify.settings import Settings
from oos_notify.store import agreement_versions, audit, signatures
from oos_notify.store.lifecycle import IncidentStatus, NotificationKind, NotificationStatus
from oos_notify.store.models import (
    Acknowledgement,
    AgreementVersion,
    AuditEntry,
    Event,
    Incident,
    Notification,
)
from oos_notify.web.console import causes, fmt
from oos_notify.web.console.accounts import SignedIn
from oos_notify.web.console.causes import Change
from oos_notify.web.console.fmt import role, sentence, words

FOLLOW_UPS = (EventType.UPDATE, EventType.DISPOSITION, EventType.RESOLVED, EventType.WITHDRAWN)
"""What QA may post from the console: the follow-ups, not new results (those come with their
failed attributes from the quality system)."""
DISPOSITION_CHOICES = [d for d in Disposition if d is not Disposition.UNDER_INVESTIGATION]

DECISION_FIELDS = frozenset({"response", "comment", "client_address", "user_agent", "round"})
"""What every ``decided`` audit entry carries; anything else it carries is shown with the
decision as it is."""
FROM_THE_ANSWER = frozenset(
    {"signature", "revision", "phone", "confirmed_by", "attribution", signatures.SIGNED_CONTENT}
)
"""Kept on the answer itself too, and shown from there in words (``answer_facts``)."""
CAUSE_KINDS = frozenset({"event", "confirmation", "decision"})
"""The timeline's items that bring others about: an event received, an answer from the center."""


def answer_title(answer: Acknowledgement, *, noun: bool = False) -> str:
    """What an answer is, in the QA desk's words (``noun``: as the record lists it): a
    confirmation that stopped nothing (a cell lab's) and a request to be called are not
    confirmations of the round."""
    if answer.purpose == "decision":
        return "Decision recorded by QA" if answer.revision else "Decision"
    if answer.purpose == "callback_request":
        return "Call request" if noun else "Call requested"
    confirmed = "Confirmation" if noun else "Confirmed"
    return f"{confirmed}, stopping nothing" if answer.stopped_escalation is False else confirmed


def step_name(kind: str, level: int) -> str:
    """What a notification is, in the QA desk's words."""
    names = {
        NotificationKind.PATIENT: "patient communication",
        NotificationKind.RECEIPT: "receipt",
        NotificationKind.FOLLOW_UP: "follow-up notice",
        NotificationKind.DECISION: "decision request",
        NotificationKind.DELIVERY_FAILURE: "delivery failure report",
        NotificationKind.PHYSICIAN: "treating physician's step",
    }
    if kind == NotificationKind.ESCALATION:
        return "first notice" if level == 0 else f"escalation step {level}"
    return names.get(NotificationKind(kind), words(kind))


@dataclass(frozen=True)
class Item:
    """One line of the timeline."""

    at: datetime
    seq: int
    """The audit entry that recorded it: orders what happened at one instant."""
    kind: str
    """``event``, ``notification``, ``confirmation``, ``decision`` or ``status``."""
    title: str
    tone: str
    """``ok``, ``warn``, ``bad``, ``info`` or ``muted``: the marker's colour, said in words too."""
    future: bool = False
    notification: Notification | None = None
    answer: Acknowledgement | None = None
    by: str | None = None
    details: list[tuple[str, str]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    """For an event: each fact it changed, old and new."""
    why: str | None = None
    """For an event: the summary it came with."""
    effects: list[Item] = field(default_factory=list)
    """What it brought about at once (a status changed, steps cancelled, notices sent), in the
    order it happened: shown under it, folded."""

    @property
    def effects_summary(self) -> str:
        """The effects in a few words: ``status changed to acknowledged; 6 cancelled``."""
        statuses = [sentence(e.title) for e in self.effects if e.notification is None]
        counted = Counter(e.notification.status for e in self.effects if e.notification)
        messages = [
            f"{count} {'email' if count == 1 else 'emails'} {status}"
            for status, count in sorted(counted.items())
        ]
        return "; ".join([*statuses, *messages])


@dataclass(frozen=True)
class IncidentView:
    incident: Incident
    agreement: EffectiveAgreement
    events: Sequence[Event]
    notifications: Sequence[Notification]
    answers: Sequence[Acknowledgement]
    trail: Sequence[AuditEntry]
    timeline: list[Item]
    now: datetime
    proposals: Sequence[ProposalOut] = ()
    """Proposed revisions of the decision, oldest first, whatever became of them."""
    approved: AgreementVersion | None = None
    """The approved version of the agreements the incident opened under."""

    @property
    def approved_version(self) -> str:
        return agreement_versions.approval(self.approved)

    @property
    def event_changes(self) -> dict[str, list[Change]]:
        """What each follow-up changed, by event id, as the timeline shows it."""
        return causes.changes(self.events, self.trail, self.agreement.timezone)

    @property
    def closed(self) -> bool:
        return IncidentStatus(self.incident.status).is_closed

    @property
    def key_dates(self) -> list[tuple[str, str, str]]:
        """Every key date (name, label, ISO date or empty), in the vocabulary's order."""
        dates = self.incident.key_dates
        return [(k.value, KEY_DATE_LABELS[k], dates.get(k.value, "")) for k in KeyDate]

    @property
    def disposition_label(self) -> str:
        disposition = self.incident.disposition
        return DISPOSITION_LABELS[Disposition(disposition)] if disposition else "not yet decided"

    @property
    def decision_awaited(self) -> bool:
        return (
            self.incident.disposition == Disposition.OOS_RELEASE_OFFERED
            and self.incident.decision is None
        )

    def answer_title(self, answer: Acknowledgement, *, noun: bool = False) -> str:
        return answer_title(answer, noun=noun)

    @property
    def summary_source(self) -> Item | None:
        """The latest event that came with the incident's summary: who wrote it, and when."""
        given = [
            item
            for item in self.timeline
            if item.kind == "event" and item.why and item.why == self.incident.summary
        ]
        return given[-1] if given else None

    def answer_facts(self, answer: Acknowledgement) -> list[tuple[str, str]]:
        return answer_facts(self.trail, answer)

    def answerer(self, answer: Acknowledgement) -> Markup:
        """Who answered, by the name their email was addressed to, their address on hover."""
        name = next(
            (n.recipient_name for n in self.notifications if n.id == answer.notification_id),
            None,
        )
        return fmt.person(name, answer.email)

    @property
    def oos_release(self) -> OosReleaseOut | None:
        return queries.oos_release(self.incident.oos_release)

    @property
    def asked(self) -> list[Markup]:
        """The deciders asked of the offered product, by name, their addresses on hover."""
        offer = self.incident.oos_release or {}
        return [fmt.person(a.get("name"), a["email"]) for a in offer.get("asked", [])]

    @property
    def callback_tasks(self) -> list[CallbackTask]:
        return queries.callback_tasks(self.answers)

    @property
    def revisable(self) -> bool:
        """Whether a revision of the decision may be proposed: a product is offered and the
        incident is open."""
        return (
            self.incident.disposition == Disposition.OOS_RELEASE_OFFERED
            and self.incident.oos_release is not None
            and not self.closed
        )

    @property
    def deciders(self) -> list[tuple[str, str]]:
        """Those asked to decide (contact id, name), whom a revision may name."""
        offer = self.incident.oos_release
        return [(p.contact_id, p.name) for p in offers.stored_asked(offer)] if offer else []

    @property
    def decision_choices(self) -> list[AckResponse]:
        return [r for r in AckResponse if r.is_decision]

    @property
    def pending_proposals(self) -> list[ProposalOut]:
        return [p for p in self.proposals if p.status == revisions.PENDING]

    @property
    def settled_proposals(self) -> list[ProposalOut]:
        return [p for p in self.proposals if p.status != revisions.PENDING]

    def decider_name(self, contact_id: str) -> str:
        return dict(self.deciders).get(contact_id, contact_id)

    def clinical_facts(self, *, with_utc: bool = False) -> list[tuple[str, str]]:
        """Where the product is, the decision in force with its signature, and the facts of a
        re-manufacture or of a release within specification, when the incident has them."""
        i = self.incident

        def when(instant: datetime) -> str:
            tz = self.agreement.timezone
            return fmt.zoned(instant, tz) if with_utc else fmt.instant(instant, tz)

        facts: list[tuple[str, str]] = []
        if i.product_status:
            state = ProductStatus(i.product_status).label
            facts.append(("Product", f"{state}, {when(i.infused_at)}" if i.infused_at else state))
        if i.treating_physician:
            confirmed = (
                f"confirmed {when(i.physician_confirmed_at)}"
                if i.physician_confirmed_at
                else "not confirmed yet"
            )
            person = f"{i.treating_physician['name']} <{i.treating_physician['email']}>"
            facts.append(("Treating physician", f"{person}, {confirmed}"))
        decisions = [a for a in self.answers if a.purpose == "decision"]
        if i.decision and decisions:
            decision, signature = AckResponse(i.decision).label, decisions[-1].signature
            if signature:
                decision += f", signed by {signature['printed_name']}, {signature['shown']}"
            facts.append(("Decision", decision))
        if i.remanufacture:
            facts += [
                (f"Re-manufacture: {words(key)}", _fact(value))
                for key, value in i.remanufacture.items()
            ]
        if i.within_spec_basis:
            facts += [
                (f"Released within specification: {words(key)}", str(value))
                for key, value in i.within_spec_basis.items()
            ]
        return facts

    @property
    def plan(self) -> str:
        plan = self.agreement.plans[EventType(self.incident.plan_type)]
        return f"{plan.id} ({plan.description})" if plan.description else plan.id


def load(session: Session, incident: Incident, now: datetime) -> IncidentView:
    """Everything the incident page and the incident record show, read in one session."""
    rows = queries.incident_rows(session, incident.id)
    event_rows, notification_rows, answer_rows = rows.events, rows.notifications, rows.answers
    trail = session.exec(
        select(AuditEntry)
        .where(AuditEntry.incident_id == incident.id)
        .order_by(col(AuditEntry.seq))
    ).all()
    agreement = EffectiveAgreement.stored(incident.agreement)
    timeline = _timeline(event_rows, notification_rows, answer_rows, trail, now, agreement.timezone)
    approved = (
        session.get(AgreementVersion, incident.agreements_version_id)
        if incident.agreements_version_id is not None
        else None
    )
    return IncidentView(
        incident,
        agreement,
        event_rows,
        notification_rows,
        answer_rows,
        trail,
        timeline,
        now,
        revisions.for_incident(session, incident.id),
        approved,
    )


def answer_facts(trail: Sequence[AuditEntry], answer: Acknowledgement) -> list[tuple[str, str]]:
    """What an answer says beyond its response and comment: the signature a decision was
    recorded with (21 CFR 11.50), who recorded a revision and why, the number to call,
    whether a confirmation stopped the escalation."""
    facts: list[tuple[str, str]] = []
    attributed = _attribution(trail, answer)
    if attributed:
        facts.append(("who", attributed))
    if answer.purpose == "acknowledgement" and answer.stopped_escalation is False:
        facts.append(("stopped the escalation", "no: not one of the plan's stopping roles"))
    if answer.callback_phone:
        facts.append(("call back on", answer.callback_phone))
    if answer.signature:
        signed = answer.signature
        method = signed.get("method")
        typed = signatures.TYPED_NAME
        facts += [
            ("signed by (printed name)", signed["printed_name"]),
            ("signed with", signatures.METHOD_LABELS.get(method, method) if method else typed),
            ("signed at", f"{signed['shown']} ({signed['timezone']})"),
            ("meaning", signed["meaning"]),
        ]
        if signed.get("content_sha256"):
            facts.append(("signed content SHA-256", signed["content_sha256"]))
    if answer.revision:
        recorder = answer.revision["recorded_by"]
        facts += [
            ("recorded by", f"{recorder['name']} <{recorder['email']}>"),
            ("reason", answer.revision["reason"]),
        ]
        if answer.revision.get("proposed_by"):
            facts.append(("proposed by", answer.revision["proposed_by"]))
        if answer.revision.get("previous_response"):
            previous = AckResponse(answer.revision["previous_response"]).label
            facts.append(("replaces", previous))
    return facts + _decision_extras(trail, answer)


def _entry(trail: Sequence[AuditEntry], answer: Acknowledgement) -> AuditEntry | None:
    """The audit entry that recorded an answer."""
    return next(
        (
            e
            for e in trail
            if e.action == audit_action(answer)
            and e.notification_id == answer.notification_id
            and e.at == answer.at
        ),
        None,
    )


def _answered_by(
    trail: Sequence[AuditEntry], answer: Acknowledgement, names: Mapping[str, Markup]
) -> str:
    """Who answered, with their role: the person a shared mailbox's page named, else the
    recipient by name (the address on hover)."""
    attribution = _attribution(trail, answer)
    who = attribution if attribution else names.get(answer.notification_id, answer.email)
    return who + f" ({role(answer.role)})"


def _attribution(trail: Sequence[AuditEntry], answer: Acknowledgement) -> str | None:
    """Who confirmed for a shared mailbox: the person named on its link, or the mailbox."""
    if answer.confirmed_by:
        return f"confirmed by {answer.confirmed_by} via {answer.email}"
    entry = _entry(trail, answer)
    found = entry.detail.get("attribution") if entry is not None else None
    return str(found) if found else None


def _fact(value: object) -> str:
    """A stored yes-or-no fact in words; one left out is not known yet."""
    if value is None:
        return "not yet known"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _decision_extras(trail: Sequence[AuditEntry], answer: Acknowledgement) -> list[tuple[str, str]]:
    if answer.purpose != "decision":
        return []
    entry = _entry(trail, answer)
    if entry is None:
        return []
    shown = DECISION_FIELDS | FROM_THE_ANSWER
    return [(words(k), str(v)) for k, v in entry.detail.items() if k not in shown]


def _timeline(
    event_rows: Sequence[Event],
    notification_rows: Sequence[Notification],
    answer_rows: Sequence[Acknowledgement],
    trail: Sequence[AuditEntry],
    now: datetime,
    timezone: str,
) -> list[Item]:
    """Everything that happened, and what is due, in time order; what happened at one instant
    in the order the audit trail recorded it; what an event or an answer brought about at once
    under it (``_grouped``)."""
    seq: dict[tuple[str, str | None], int] = {}
    for e in trail:
        subject = e.notification_id or e.detail.get("event_id")
        seq.setdefault((e.action, subject), e.seq or 0)
    posted_by = {
        e.detail.get("event_id"): e.actor for e in trail if e.action == "console_event_posted"
    }
    changed = causes.changes(event_rows, trail, timezone)
    settled_at = {
        e.notification_id: e
        for e in trail
        if e.action in ("notification_cancelled", "notification_failed")
    }
    items = [
        Item(
            e.received_at,
            seq.get(("event_received", e.event_id), 0),
            "event",
            f"{sentence(words(e.type))} received",
            "info",
            by=posted_by.get(e.event_id, "manufacturer (API)"),
            details=[("event", e.event_id)],
            changes=changed.get(e.event_id, []),
            why=e.payload.get("summary"),
        )
        for e in event_rows
    ]
    items += [_notification_item(n, settled_at.get(n.id), seq, now) for n in notification_rows]
    names = {n.id: fmt.person(n.recipient_name, n.recipient_email) for n in notification_rows}
    for answer in answer_rows:
        deciding = answer.purpose == "decision"
        counted = answer.purpose != "callback_request" and answer.stopped_escalation is not False
        items.append(
            Item(
                answer.at,
                seq.get((audit_action(answer), answer.notification_id), 0),
                "decision" if deciding else "confirmation",
                f"{answer_title(answer)}: {AckResponse(answer.response).label}",
                "ok" if counted else "info",
                answer=answer,
                by=_answered_by(trail, answer, names),
                details=[
                    *([("comment", answer.comment)] if answer.comment else []),
                    *answer_facts(trail, answer),
                ],
            )
        )
    items += [
        Item(
            e.at,
            e.seq or 0,
            "status",
            f"Status changed to {fmt.status(str(e.detail.get('status_to')))}",
            "muted",
            by=e.actor,
        )
        for e in trail
        if e.action in ("incident_status_changed", "escalation_restarted")
    ]
    items += [
        Item(
            e.at,
            e.seq or 0,
            "status",
            f"Severity raised to {e.detail.get('severity_to')}"
            if e.action == "severity_changed"
            else "Reopened by a late result",
            "warn",
            by=e.actor,
            details=[("rule", str(e.detail["severity_rule"]))]
            if e.detail.get("severity_rule")
            else [],
        )
        for e in trail
        if e.action in ("severity_changed", "incident_reopened")
    ]
    items += [_revision_item(e) for e in trail if e.action in REVISION_ACTIONS]
    return _grouped(items, trail, seq)


def _grouped(
    items: list[Item], trail: Sequence[AuditEntry], seq: Mapping[tuple[str, str | None], int]
) -> list[Item]:
    """The items in time order, each effect moved under its cause: an item recorded in the same
    transaction as an event or an answer (``causes.runs``), or a notification that transaction
    scheduled to go at once (a follow-up notice). What opened the incident is no cause here:
    everything comes from it."""
    first = causes.runs(trail)
    opened = causes.opening_runs(trail, first)
    at = {e.seq: e.at for e in trail}
    by_run: dict[int, Item] = {}
    for item in items:
        run = first.get(item.seq)
        if item.kind in CAUSE_KINDS and run is not None and run not in opened:
            by_run.setdefault(run, item)

    def cause_of(item: Item) -> Item | None:
        if item.kind in CAUSE_KINDS:
            return None
        n = item.notification
        scheduled = seq.get(("notification_scheduled", n.id)) if n else None
        # A step scheduled for later stays in time order, below the now line until it goes
        recorded = [item.seq] if item.seq != scheduled else []
        if n is not None and scheduled and n.due_at <= at[scheduled]:
            recorded.append(scheduled)
        runs = (first.get(s) for s in recorded)
        return next((by_run[r] for r in runs if r is not None and r in by_run), None)

    shown = []
    for item in sorted(items, key=lambda item: (item.at, item.seq)):
        cause = cause_of(item)
        if cause is None:
            shown.append(item)
        else:
            cause.effects.append(item)
    return shown


REVISION_ACTIONS = {
    "decision_revision_proposed": "Revision of the decision proposed",
    "decision_revision_rejected": "Proposed revision rejected",
}


def _revision_item(entry: AuditEntry) -> Item:
    """A proposed revision, or its rejection, with the signature it carries (an approval is
    the decision it records)."""
    detail = entry.detail
    signature = detail.get(signatures.SIGNATURE)
    details = [("proposal", str(detail.get("proposal_id")))]
    if detail.get("response"):
        details.append(("decision proposed", AckResponse(detail["response"]).label))
    if detail.get("reason"):
        details.append(("reason", str(detail["reason"])))
    if signature:
        details += [
            ("signed by (printed name)", str(signature["printed_name"])),
            ("signed at", str(signature["signed_at"])),
            ("meaning", str(signature["meaning"])),
            ("method", str(signature["method"])),
        ]
    else:
        details.append(("signed", "no: proposed by the QA system's API key"))
    return Item(
        entry.at,
        entry.seq or 0,
        "decision",
        REVISION_ACTIONS[entry.action],
        "warn" if entry.action == "decision_revision_proposed" else "muted",
        by=entry.actor,
        details=details,
    )


def _notification_item(
    n: Notification,
    settled: AuditEntry | None,
    seq: Mapping[tuple[str, str | None], int],
    now: datetime,
) -> Item:
    status = NotificationStatus(n.status)
    tone = {
        NotificationStatus.SENT: "ok",
        NotificationStatus.FAILED: "bad",
        NotificationStatus.CANCELLED: "muted",
        NotificationStatus.SENDING: "info",
        NotificationStatus.SCHEDULED: "warn" if n.attempts else "info",
    }[status]
    at = n.sent_at or (settled.at if settled else n.due_at)
    recorded = settled.seq if settled else seq.get(("notification_sent", n.id))
    details = [("role", role(n.role)), ("template", n.template)]
    if n.attempts:
        details.append(("attempts", str(n.attempts)))
    if n.last_error:
        details.append(("failure reason", n.last_error))
    if status is NotificationStatus.CANCELLED and settled is not None:
        details.append(("why cancelled", str(settled.detail.get("reason", ""))))
    return Item(
        at,
        recorded or seq.get(("notification_scheduled", n.id), 0),
        "notification",
        f"{sentence(step_name(n.kind, n.level))} to {n.recipient_name}",
        tone,
        future=status is NotificationStatus.SCHEDULED and n.due_at > now,
        notification=n,
        details=details,
    )


# --- follow-ups -----------------------------------------------------------------------------


def new_event_id() -> str:
    """The id a follow-up form posts with: sending the form twice records the event once."""
    return f"console-{secrets.token_hex(10)}"


def follow_up(incident: Incident, form: Mapping[str, Any], now: datetime) -> EventIn:
    """The event a follow-up form describes, checked as the API checks it; InvalidFields
    names the form's field otherwise."""
    kind = str(form.get("type", ""))
    if kind not in {t.value for t in FOLLOW_UPS}:
        raise InvalidFields([("type", f"not a follow-up the console posts: {kind!r}", "type")])
    summary = _given(form, "summary")
    facts = _product_facts(incident, form)
    payload: dict[str, Any] = {
        "event_id": str(form.get("event_id", "")),
        "type": kind,
        "incident_ref": incident.incident_ref,
        "occurred_at": now,
        "center_id": incident.center_id,
        "summary": summary,
        **facts,
    }
    if kind == EventType.UPDATE:
        changed = {
            key.value: value
            for key in KeyDate
            if (value := _given(form, f"key_date_{key.value}"))
            and value != incident.key_dates.get(key.value)
        }
        if not changed and summary is None and not facts:
            raise InvalidFields(
                [("key_dates", "change a key date or write a summary to post an update", "empty")]
            )
        payload["key_dates"] = changed
    if kind == EventType.DISPOSITION:
        payload["disposition"] = _given(form, "disposition")
        payload["oos_pathway"] = _given(form, "oos_pathway")
    if kind in (EventType.RESOLVED, EventType.WITHDRAWN) and not form.get("confirm"):
        raise InvalidFields(
            [
                (
                    "confirm",
                    f"tick the box to confirm: {kind} closes the incident for good",
                    "confirm",
                )
            ]
        )
    try:
        return EventIn.model_validate(payload)
    except ValidationError as error:
        raise InvalidFields(
            [
                (".".join(str(p) for p in e["loc"]), e["msg"], e["type"])
                for e in error.errors(include_url=False)
            ]
        ) from None


CHECKLIST_FIELD = "checklist_"
"""A checklist item's reference is posted as ``checklist_<item id>``."""
YES_NO = {"yes": True, "no": False}


def _given(form: Mapping[str, Any], name: str) -> str | None:
    """A form field as posted, trimmed; None when left empty."""
    return str(form.get(name, "")).strip() or None


def _product_facts(incident: Incident, form: Mapping[str, Any]) -> dict[str, Any]:
    """What the incident page's forms say of the product beyond the event's type (each field
    only when given, so the API's own checks name what does not fit): the checklist items
    confirmed, where the product is, the re-manufacture facts and the basis of a release
    within specification."""
    facts: dict[str, Any] = {}
    checklist = [
        {"item": name.removeprefix(CHECKLIST_FIELD), "reference": reference}
        for name in form
        if name.startswith(CHECKLIST_FIELD) and (reference := _given(form, name))
    ]
    if checklist:
        facts["oos_checklist"] = checklist
    if status := _given(form, "product_status"):
        facts["product_status"] = status
    if infused := _given(form, "infused_at"):
        facts["infused_at"] = _center_time(infused, incident, "infused_at")
    remanufacture = {
        name: YES_NO.get(value, value)
        for name in ("new_apheresis_needed", "expected_release", "bridging_therapy_needed")
        if (value := _given(form, name)) and value != "unknown"
    }
    if remanufacture:
        facts["remanufacture"] = remanufacture
    basis = {
        name: value
        for name in ("assignable_cause", "certificate_of_analysis")
        if (value := _given(form, name))
    }
    if basis:
        facts["within_spec_basis"] = basis
    return facts


def _center_time(value: str, incident: Incident, name: str) -> datetime:
    """A time the form gives as read at the center (``2026-12-06T14:30``), as an instant."""
    zone = ZoneInfo(EffectiveAgreement.stored(incident.agreement).timezone)
    try:
        local = datetime.fromisoformat(value)
        if local.tzinfo is not None:
            raise ValueError(value)
        return local.replace(tzinfo=zone).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidFields(
            [(name, "a date and time at the center, as 2026-12-06T14:30", "datetime")]
        ) from None


@dataclass(frozen=True)
class Outgoing:
    """A message a follow-up schedules, as the confirmation step lists it."""

    step: str
    recipient_name: str
    recipient_email: str
    role: str
    due_at: datetime


@dataclass(frozen=True)
class Rehearsal:
    """What posting a follow-up records and sends, learnt by posting it and rolling back."""

    disposition: str
    pathway: str | None
    scheduled: list[Outgoing]


class Rehearsed(Exception):
    """Thrown out of a transaction so that what a follow-up would do is rolled back."""

    def __init__(self, rehearsal: Rehearsal) -> None:
        self.rehearsal = rehearsal
        super().__init__("rehearsed")


def rehearse(
    session: Session,
    event: EventIn,
    agreements: Agreements,
    now: datetime,
    mail_domain: str,
    template_versions: Mapping[str, str],
) -> Rehearsal:
    """Ingest the follow-up and throw the transaction away (``Rehearsed`` carries what it did):
    the confirmation step shows exactly what posting it records and schedules, refusals
    included, because it is the posting itself, undone."""
    result = events.ingest(session, event, agreements, now, mail_domain, template_versions)
    incident = session.get(Incident, result.answer.incident_id)
    assert incident is not None
    ids = [s.notification_id for s in result.answer.scheduled]
    rows = session.exec(
        select(Notification)
        .where(col(Notification.id).in_(ids))
        .order_by(col(Notification.due_at), col(Notification.id))
    ).all()
    disposition = incident.disposition
    raise Rehearsed(
        Rehearsal(
            DISPOSITION_LABELS[Disposition(disposition)] if disposition else "not yet decided",
            incident.oos_release["name"] if incident.oos_release else None,
            [
                Outgoing(
                    step_name(n.kind, n.level),
                    n.recipient_name,
                    n.recipient_email,
                    n.role,
                    n.due_at,
                )
                for n in rows
            ],
        )
    )


def post_follow_up(
    session: Session,
    event: EventIn,
    who: SignedIn,
    agreements: Agreements,
    now: datetime,
    mail_domain: str,
    template_versions: Mapping[str, str],
) -> IngestResult:
    """Ingest the follow-up exactly as ``POST /v1/events`` does, and say in the audit trail who
    posted it from the console."""
    result = events.ingest(session, event, agreements, now, mail_domain, template_versions)
    if not result.answer.duplicate:
        audit.record(
            session,
            now,
            "console_event_posted",
            who.email,
            incident_id=result.answer.incident_id,
            event_id=event.event_id,
            type=event.type,
        )
    return result


# --- email previews ---------------------------------------------------------------------------

_THROWAWAY_TOKENS = AckTokens(secrets.token_urlsafe(32))
"""Signs the links of previews with a key nobody keeps: a preview never holds a working link."""


def preview(
    session: Session,
    incident: Incident,
    notification: Notification,
    renderer: Renderer,
    settings: Settings,
    now: datetime,
) -> RenderedMessage:
    """The email as the dispatcher would render it now, its acknowledgement link replaced by a
    placeholder (QA must not answer for the center)."""
    agreement = EffectiveAgreement.stored(incident.agreement)
    answers = messaging.Answers.of(session, incident)
    context = messaging.build_context(
        session, notification, incident, agreement, answers, _THROWAWAY_TOKENS, settings, now
    )
    if context.ack is not None:
        placeholder = f"{settings.public_base_url.rstrip('/')}/ack/link-issued-when-sent"
        context = context.model_copy(
            update={"ack": AckLinkView(url=placeholder, expires_at=context.ack.expires_at)}
        )
    return renderer.render(
        notification.template,
        context,
        messaging.center_ids(agreement),
        version=incident.template_version,
    )
