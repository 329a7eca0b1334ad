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
from oos_notify.agreements.vocabulary import AckResponse, Disposition, EventType, KeyDate
from oos_notify.delivery import messaging
from oos_notify.delivery.rendering import (
    DISPOSITION_LABELS,
    KEY_DATE_LABELS,
    AckLinkView,
    RenderedMessage,
    Renderer,
)
from oos_notify.errors import InvalidFields
from oos_notify.incidents import events
from oos_notify.incidents.acknowledgement import AckTokens
from oos_notify.incidents.events import EventIn, IngestResult
from oos_notify.settings import Settings
from oos_notify.store import audit
from oos_notify.store.lifecycle import IncidentStatus, NotificationKind, NotificationStatus
from oos_notify.store.models import Acknowledgement, AuditEntry, Event, Incident, Notification
from oos_notify.web.console.accounts import SignedIn
from oos_notify.web.console.fmt import role, sentence, words

FOLLOW_UPS = (EventType.UPDATE, EventType.DISPOSITION, EventType.RESOLVED, EventType.WITHDRAWN)
"""What QA may post from the console: the follow-ups, not new results (those come with their
failed attributes from the quality system)."""
DISPOSITION_CHOICES = [d for d in Disposition if d is not Disposition.UNDER_INVESTIGATION]

DECISION_FIELDS = frozenset({"response", "comment", "client_address", "user_agent", "round"})
"""What every ``decided`` audit entry carries; anything else it carries (how the decision was
signed, say) is shown with the decision as it is."""


def step_name(kind: str, level: int) -> str:
    """What a notification is, in the QA desk's words."""
    names = {
        NotificationKind.PATIENT: "patient communication",
        NotificationKind.RECEIPT: "receipt",
        NotificationKind.FOLLOW_UP: "follow-up notice",
        NotificationKind.DECISION: "decision request",
        NotificationKind.DELIVERY_FAILURE: "delivery failure report",
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

    def decision_extras(self, answer: Acknowledgement) -> list[tuple[str, str]]:
        return _decision_extras(self.trail, answer)

    @property
    def plan(self) -> str:
        plan = self.agreement.plans[EventType(self.incident.plan_type)]
        return f"{plan.id} ({plan.description})" if plan.description else plan.id


def load(session: Session, incident: Incident, now: datetime) -> IncidentView:
    """Everything the incident page and the incident record show, read in one session."""
    event_rows = session.exec(
        select(Event).where(Event.incident_id == incident.id).order_by(col(Event.received_at))
    ).all()
    notification_rows = session.exec(
        select(Notification)
        .where(Notification.incident_id == incident.id)
        .order_by(col(Notification.due_at), col(Notification.id))
    ).all()
    answer_rows = session.exec(
        select(Acknowledgement)
        .where(Acknowledgement.incident_id == incident.id)
        .order_by(col(Acknowledgement.at))
    ).all()
    trail = session.exec(
        select(AuditEntry)
        .where(AuditEntry.incident_id == incident.id)
        .order_by(col(AuditEntry.seq))
    ).all()
    agreement = EffectiveAgreement.model_validate(incident.agreement)
    timeline = _timeline(event_rows, notification_rows, answer_rows, trail, now)
    return IncidentView(
        incident, agreement, event_rows, notification_rows, answer_rows, trail, timeline, now
    )


def _decision_extras(trail: Sequence[AuditEntry], answer: Acknowledgement) -> list[tuple[str, str]]:
    entry = next(
        (e for e in trail if e.action == "decided" and e.notification_id == answer.notification_id),
        None,
    )
    if entry is None:
        return []
    return [(words(k), str(v)) for k, v in entry.detail.items() if k not in DECISION_FIELDS]


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
        action = "decided" if deciding else "acknowledged"
        items.append(
            Item(
                answer.at,
                seq.get((action, answer.notification_id), 0),
                "decision" if deciding else "confirmation",
                ("Decision: " if deciding else "Confirmed: ") + AckResponse(answer.response).label,
                "ok",
                answer=answer,
                by=f"{answer.email} ({role(answer.role)})",
                details=[
                    *([("comment", answer.comment)] if answer.comment else []),
                    *(_decision_extras(trail, answer) if deciding else []),
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
    agreement = EffectiveAgreement.model_validate(incident.agreement)
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
