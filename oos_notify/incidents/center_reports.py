"""The center's own voice: what a notice's recipient says of the patient's treatment, from the
notice's link or in a reply (lymphodepletion started or postponed, the product received, a
request to be called).

Each is recorded with its author (the notice's recipient) and goes on the timeline. A date or the
product's arrival changes the incident's facts as an ``update`` event from QA would, so the steps
due before a key date follow it. A request to be called is the service's callback request: QA is
told by email at once, the request highlighted. QA hears of every report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Session

from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.agreements.vocabulary import KeyDate, ProductStatus
from oos_notify.errors import ServiceError
from oos_notify.ids import new_id
from oos_notify.incidents import acknowledgement, call_tasks, events
from oos_notify.incidents.acknowledgement import AckState, AckTokens
from oos_notify.incidents.planning import plan_to_qa
from oos_notify.store import audit, outbox
from oos_notify.store.lifecycle import Condition, IncidentStatus, NotificationKind
from oos_notify.store.models import CenterReport, CenterReportReceipt, Incident, Notification
from oos_notify.texts import storable

REPORT_TEMPLATE = "center_report"
"""What QA receives of each report."""


class ReportKind(StrEnum):
    LYMPHODEPLETION_STARTED = "lymphodepletion_started"
    LYMPHODEPLETION_POSTPONED = "lymphodepletion_postponed"
    PRODUCT_RECEIVED = "product_received"
    CALL_ME = "call_me"

    @property
    def label(self) -> str:
        """How the page offers it and QA's message names it."""
        return _LABELS[self]

    @property
    def dated(self) -> bool:
        return self in (ReportKind.LYMPHODEPLETION_STARTED, ReportKind.LYMPHODEPLETION_POSTPONED)


_LABELS = {
    ReportKind.LYMPHODEPLETION_STARTED: "Lymphodepletion started",
    ReportKind.LYMPHODEPLETION_POSTPONED: "Lymphodepletion postponed",
    ReportKind.PRODUCT_RECEIVED: "Product received at the center",
    ReportKind.CALL_ME: "Please call me",
}


class Source(StrEnum):
    LINK = "link"
    REPLY = "reply"


Phone = Annotated[str, Field(max_length=40, pattern=r"^\+?[0-9][0-9 ()./-]*$")]
Clock = Annotated[str, Field(pattern=r"^([01]?[0-9]|2[0-3]):[0-5][0-9]$")]


class ReportIn(BaseModel):
    """A report as the page's form or a reply's reading gives it."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    kind: ReportKind
    day: Annotated[date, Field(ge=date(2000, 1, 1), le=date(2100, 12, 31))] | None = None
    """The day lymphodepletion started, or the day it is postponed to."""
    phone: Phone | None = None
    """Where to call, when not the number on file."""
    call_from: Clock | None = None
    call_until: Clock | None = None
    """When to call, in the center's time zone; without them, as soon as possible."""
    comment: Annotated[str, Field(max_length=2000), AfterValidator(storable)] | None = None

    @property
    def call_window(self) -> str | None:
        """When to call, as the center's time zone reads it; None: as soon as possible."""
        if self.call_from and self.call_until:
            return f"{self.call_from}-{self.call_until}"
        if self.call_from:
            return f"from {self.call_from}"
        if self.call_until:
            return f"until {self.call_until}"
        return None


FORM_PROBLEMS = {
    "kind": "Choose what you are telling us.",
    "day": "Give the date as year-month-day, for example 2031-03-04.",
    "phone": "Write the phone number with digits, spaces and + ( ) - . / only.",
    "call_from": "Give the times to call as hours and minutes, for example 14:00.",
    "call_until": "Give the times to call as hours and minutes, for example 16:00.",
    "comment": "A comment is limited to 2000 characters, without the character U+0000 (NUL).",
}


class ReportRefused(ServiceError):
    """A report the page cannot take as given: the page says why and keeps the link usable."""

    status_code = 422
    title = "Please check what you sent"


class ReportNotTaken(ReportRefused):
    """A report the incident's state does not allow (it is closed)."""

    status_code = 409


def form_problem(error: ValidationError) -> ReportRefused:
    """The plain words for the first field of a report that is wrong."""
    first = error.errors()[0] if error.errors() else None
    field = str(first["loc"][0]) if first and first["loc"] else "kind"
    return ReportRefused(FORM_PROBLEMS.get(field, FORM_PROBLEMS["kind"]))


def problem(
    report: ReportIn,
    status: str,
    product_status: str | None,
    phone_on_file: str | None,
    today: date,
) -> str | None:
    """Why a report cannot be taken for an incident in this state, on ``today`` at the center;
    None when it can."""
    if IncidentStatus(status).is_closed:
        return f"This incident is {status}: nothing more is needed from this link."
    if report.kind.dated and report.day is None:
        return "Give the date."
    if report.kind is ReportKind.LYMPHODEPLETION_STARTED and report.day and report.day > today:
        return (
            f"A lymphodepletion that started cannot start after today ({today.isoformat()}); "
            "if it is planned for later, tell us it is postponed to that date."
        )
    if report.kind is ReportKind.LYMPHODEPLETION_POSTPONED and report.day and report.day < today:
        return f"A postponement is to a date from today ({today.isoformat()}) on."
    if report.kind is ReportKind.PRODUCT_RECEIVED and product_status == ProductStatus.INFUSED:
        return "The product is recorded as infused: it was received before."
    if report.kind is ReportKind.CALL_ME and not (report.phone or phone_on_file):
        return "Give the number to call you on."
    return None


@dataclass(frozen=True)
class Recorded:
    report: CenterReport
    wakes: bool
    """Something is due now (QA's message, an update notice): the dispatcher should run."""


def refusal(
    incident: Incident, notification: Notification, report: ReportIn, now: datetime
) -> str | None:
    """Why ``report`` on ``notification`` cannot be taken now; None when it can."""
    agreement = EffectiveAgreement.stored(incident.agreement)
    contact = agreement.contact(notification.contact_id)
    on_file = contact.phone if contact else None
    today = center_today(agreement, now)
    return problem(report, incident.status, incident.product_status, on_file, today)


def center_today(agreement: EffectiveAgreement, now: datetime) -> date:
    return now.astimezone(ZoneInfo(agreement.timezone)).date()


def record(
    session: Session,
    incident: Incident,
    notification: Notification,
    report: ReportIn,
    source: Source,
    now: datetime,
    mail_domain: str,
) -> Recorded:
    """Record what the notice's recipient said, change the facts it changes, and tell QA.
    Raises ReportRefused (nothing written) when the incident's state does not allow it."""
    agreement = EffectiveAgreement.stored(incident.agreement)
    contact = agreement.contact(notification.contact_id)
    on_file = contact.phone if contact else None
    why = refusal(incident, notification, report, now)
    if why is not None:
        raised = ReportNotTaken if IncidentStatus(incident.status).is_closed else ReportRefused
        raise raised(why)
    author = notification.recipient_email
    row = CenterReport(
        id=new_id("rpt"),
        incident_id=incident.id,
        notification_id=notification.id,
        contact_id=notification.contact_id,
        email=author,
        role=notification.role,
        kind=report.kind.value,
        day=report.day,
        phone=(report.phone or on_file) if report.kind is ReportKind.CALL_ME else None,
        call_window=report.call_window if report.kind is ReportKind.CALL_ME else None,
        comment=report.comment or None,
        source=source.value,
        at=now,
    )
    audit.record(
        session,
        now,
        "center_reported",
        author,
        incident_id=incident.id,
        notification_id=notification.id,
        report=row.id,
        kind=row.kind,
        day=row.day.isoformat() if row.day else None,
        source=row.source,
        comment=row.comment,
    )
    wakes = False
    changed = _facts_changed(report, incident)
    if changed is not None:
        key_dates, product_status = changed
        answer = events.center_update(
            session, incident, key_dates, product_status, author, now, mail_domain
        )
        row.event_id = answer.event_id
        wakes = any(s.due_at <= now for s in answer.scheduled)
    if report.kind is ReportKind.CALL_ME:
        name = contact.name if contact else notification.recipient_name or author
        callback_requested(session, incident, row, name, now, mail_domain)
    session.add(row)
    session.flush()  # the receipts below refer to it
    receipts = plan_to_qa(
        agreement,
        incident.qa_contact,
        NotificationKind.RECEIPT,
        REPORT_TEMPLATE,
        now,
        Condition.ALWAYS,
    )
    scheduled = outbox.schedule(session, incident.id, receipts, now, mail_domain)
    for receipt_id, _ in scheduled:
        session.add(CenterReportReceipt(notification_id=receipt_id, report_id=row.id))
    session.flush()
    return Recorded(row, wakes or bool(scheduled))


def _facts_changed(
    report: ReportIn, incident: Incident
) -> tuple[dict[KeyDate, date], ProductStatus | None] | None:
    if report.kind.dated:
        assert report.day is not None
        return {KeyDate.LYMPHODEPLETION_START: report.day}, None
    if report.kind is ReportKind.PRODUCT_RECEIVED:
        if incident.product_status == ProductStatus.AT_CENTER:
            return None
        return {}, ProductStatus.AT_CENTER
    return None


def callback_requested(
    session: Session,
    incident: Incident,
    report: CenterReport,
    name: str,
    now: datetime,
    mail_domain: str,
) -> None:
    """A center contact asks to be called back: on the timeline as the service's callback
    request, and a call task for the caller of the plan's call rules (else QA), with the number
    and the window the contact gave; QA is told by email with the report."""
    audit.record(
        session,
        now,
        "callback_requested",
        report.email,
        incident_id=incident.id,
        notification_id=report.notification_id,
        report=report.id,
        phone=report.phone,
        call_window=report.call_window,
        source=report.source,
    )
    window = f", {report.call_window} (center time)" if report.call_window else ""
    call_tasks.open_call_task(
        session,
        incident,
        now,
        mail_domain,
        reason=f"{name} ({report.role}) asked to be called back{window}",
        rule="center_request",
        numbers=[{"name": name, "role": report.role, "phone": report.phone}],
        actor=report.email,
    )


@dataclass(frozen=True)
class LinkReport:
    """The page behind a link after its recipient reported something."""

    state: AckState
    recorded: Recorded


def from_link(
    session: Session,
    tokens: AckTokens,
    token: str,
    report: ReportIn,
    *,
    now: datetime,
    mail_domain: str,
) -> LinkReport:
    """Record a report made on the page behind a notice's link, by the link's recipient."""
    state = acknowledgement.view(session, tokens, token, now)
    if state.purpose is not acknowledgement.Purpose.ACKNOWLEDGEMENT:
        raise ReportRefused(
            "A decision's page takes the decision only: tell us from the link of the notice."
        )
    recorded = record(
        session, state.incident, state.notification, report, Source.LINK, now, mail_domain
    )
    session.refresh(state.incident)
    return LinkReport(state, recorded)
