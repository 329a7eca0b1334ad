"""One incident as the console shows it: its facts, a timeline of everything that happened and
is due, the follow-ups QA posts (through ``incidents.events.ingest``, as the API does), and
each scheduled email as it would be sent."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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
    local_time,
)
from oos_notify.errors import InvalidFields
from oos_notify.incidents import events, queries
from oos_notify.incidents.acknowledgement import AckTokens, audit_action
from oos_notify.incidents.events import EventIn, IngestResult
from oos_notify.incidents.queries import CallbackTask, OosReleaseOut
from oos_notify.settings import Settings
from oos_notify.store import agreement_versions, audit
from oos_notify.store.lifecycle import IncidentStatus, NotificationKind, NotificationStatus
from oos_notify.store.models import (
    Acknowledgement,
    AgreementVersion,
    AuditEntry,
    Event,
    Incident,
    Notification,
)
from oos_notify.web.console import fmt
from oos_notify.web.console.accounts import SignedIn
from oos_notify.web.console.fmt import role, sentence, words

FOLLOW_UPS = (EventType.UPDATE, EventType.DISPOSITION, EventType.RESOLVED, EventType.WITHDRAWN)
"""What QA may post from the console: the follow-ups, not new results (those come with their
failed attributes from the quality system)."""
DISPOSITION_CHOICES = [d for d in Disposition if d is not Disposition.UNDER_INVESTIGATION]

DECISION_FIELDS = frozenset({"response", "comment", "client_address", "user_agent", "round"})
"""What every ``decided`` audit entry carries; anything else it carries is shown with the
decision as it is."""
FROM_THE_ANSWER = frozenset({"signature", "revision", "phone"})
"""Kept on the answer itself too, and shown from there in words (``answer_facts``)."""


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
    approved: AgreementVersion | None = None
    """The approved version of the agreements the incident opened under."""

    @property
    def approved_version(self) -> str:
        return agreement_versions.approval(self.approved)

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

    def answer_facts(self, answer: Acknowledgement) -> list[tuple[str, str]]:
        return answer_facts(self.trail, answer)

    @property
    def oos_release(self) -> OosReleaseOut | None:
        return queries.oos_release(self.incident.oos_release)

    @property
    def callback_tasks(self) -> list[CallbackTask]:
        return queries.callback_tasks(self.answers)

    def clinical_facts(self, *, with_utc: bool = False) -> list[tuple[str, str]]:
        """Where the product is, the decision in force with its signature, and the facts of a
        re-manufacture or of a release within specification, when the incident has them."""
        i = self.incident

        def when(instant: datetime) -> str:
            tz = self.agreement.timezone
            return fmt.zoned(instant, tz) if with_utc else local_time(instant, tz)

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
    timeline = _timeline(event_rows, notification_rows, answer_rows, trail, now)
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
        approved,
    )


def answer_facts(trail: Sequence[AuditEntry], answer: Acknowledgement) -> list[tuple[str, str]]:
    """What an answer says beyond its response and comment: the signature a decision was
    recorded with (21 CFR 11.50), who recorded a revision and why, the number to call,
    whether a confirmation stopped the escalation."""
    facts: list[tuple[str, str]] = []
    if answer.purpose == "acknowledgement" and answer.stopped_escalation is False:
        facts.append(("stopped the escalation", "no: not one of the plan's stopping roles"))
    if answer.callback_phone:
        facts.append(("call back on", answer.callback_phone))
    if answer.signature:
        facts += [
            ("signed by (printed name)", answer.signature["printed_name"]),
            ("signed at", answer.signature["shown"]),
            ("meaning", answer.signature["meaning"]),
        ]
    if answer.revision:
        recorder = answer.revision["recorded_by"]
        facts += [
            ("recorded by", f"{recorder['name']} <{recorder['email']}>"),
            ("reason", answer.revision["reason"]),
        ]
        if answer.revision.get("previous_response"):
            previous = AckResponse(answer.revision["previous_response"]).label
            facts.append(("replaces", previous))
    return facts + _decision_extras(trail, answer)


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
    entry = next(
        (
            e
            for e in trail
            if e.action == audit_action(answer)
            and e.notification_id == answer.notification_id
            and e.at == answer.at
        ),
        None,
    )
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
) -> list[Item]:
    """Everything that happened, and what is due, in time order; what happened at one instant
    in the order the audit trail recorded it."""
    seq: dict[tuple[str, str | None], int] = {}
    for e in trail:
        subject = e.notification_id or e.detail.get("event_id")
        seq.setdefault((e.action, subject), e.seq or 0)
    posted_by = {
        e.detail.get("event_id"): e.actor for e in trail if e.action == "console_event_posted"
    }
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
        )
        for e in event_rows
    ]
    items += [_notification_item(n, settled_at.get(n.id), seq, now) for n in notification_rows]
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
                by=f"{answer.email} ({role(answer.role)})",
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
            f"Status changed to {words(e.detail.get('status_to'))}",
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
    return sorted(items, key=lambda item: (item.at, item.seq))


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
    summary = str(form.get("summary", "")).strip() or None
    payload: dict[str, Any] = {
        "event_id": str(form.get("event_id", "")),
        "type": kind,
        "incident_ref": incident.incident_ref,
        "occurred_at": now,
        "center_id": incident.center_id,
        "summary": summary,
    }
    if kind == EventType.UPDATE:
        changed = {
            key.value: value
            for key in KeyDate
            if (value := str(form.get(f"key_date_{key.value}", "")).strip())
            and value != incident.key_dates.get(key.value)
        }
        if not changed and summary is None:
            raise InvalidFields(
                [("key_dates", "change a key date or write a summary to post an update", "empty")]
            )
        payload["key_dates"] = changed
    if kind == EventType.DISPOSITION:
        payload["disposition"] = str(form.get("disposition", "")) or None
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
