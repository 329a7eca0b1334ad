"""The incident record: one document per incident for the deviation / OOS investigation file.

Facts, every notification with its timestamps and Message-ID, the answers, the events, and the
incident's audit entries with their hashes, closed by the digest of the whole trail as of the
incident's newest entry. Making the record is itself audited, so that entry is the one saying who
exported it, and ``oos-notify audit verify --as-of <its number>`` prints the same digest for as
long as nothing up to it is changed, however many entries the trail gains meanwhile. That entry
is numbered only as its transaction commits, so the record is first made once without it: a
record that cannot be made is refused before anything says it was exported. The same content
is a printable page and a PDF (ReportLab, with its Vera font embedded so the file reads the same
in every viewer).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from sqlmodel import Session

from oos_notify.agreements.vocabulary import AckResponse
from oos_notify.store import audit
from oos_notify.store.models import AuditEntry, Incident
from oos_notify.texts import controls_spelled_out
from oos_notify.web.console import fmt
from oos_notify.web.console.incident import IncidentView, load, step_name


@dataclass(frozen=True)
class IncidentRecord:
    view: IncidentView
    as_of: int
    """The number of the incident's newest audit entry: the record's own export."""
    digest: str
    """The trail's digest as of that entry (``audit.digest_as_of``)."""
    exported_by: str
    exported_at: datetime
    altered: list[int]
    """Entries of this incident whose content no longer matches their hash (none, normally)."""

    @property
    def title(self) -> str:
        return f"Incident record {self.view.incident.incident_ref}"

    @property
    def created_at(self) -> datetime:
        """When the record was made: the time of its newest entry, the export's own."""
        return max((e.at for e in self.view.trail if e.seq == self.as_of), default=self.exported_at)


def note_export(session: Session, incident: Incident, email: str, form: str, now: datetime) -> None:
    audit.record(
        session, now, "incident_record_exported", email, incident_id=incident.id, format=form
    )


def build(session: Session, incident: Incident, email: str, now: datetime) -> IncidentRecord:
    """Read the record: after ``note_export`` committed, the incident's newest entry is that one
    (or a later one of the incident's); before, the newest there is."""
    view = load(session, incident, now)
    as_of = max((e.seq or 0 for e in view.trail), default=0)
    altered = [e.seq or 0 for e in view.trail if audit.recomputed_hash(e) != e.entry_hash]
    return IncidentRecord(view, as_of, audit.digest_as_of(session, as_of), email, now, altered)


def detail_text(entry: AuditEntry) -> str:
    """An audit entry's detail as compact JSON, the way its hash covers it."""
    return json.dumps(entry.detail, sort_keys=True, separators=(", ", ": "), ensure_ascii=False)


# --- PDF --------------------------------------------------------------------------------------


def _pdf_date(instant: datetime) -> str:
    """A PDF date string (ISO 32000-1, 7.9.4) in UTC: ``D:20261124151200+00'00'``."""
    return instant.astimezone(UTC).strftime("D:%Y%m%d%H%M%S+00'00'")


@cache
def _fonts() -> None:
    import reportlab
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    folder = Path(reportlab.__file__).parent / "fonts"
    pdfmetrics.registerFont(TTFont("Vera", folder / "Vera.ttf"))
    pdfmetrics.registerFont(TTFont("Vera-Bold", folder / "VeraBd.ttf"))


def pdf(record: IncidentRecord) -> bytes:
    """The record as an A4 landscape PDF; the same record gives the same bytes. Its creation
    date is the time of its export's audit entry, and its file identifier derives from the
    title and the trail's digest, which its subject holds."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )
    from reportlab.platypus.flowables import Flowable

    _fonts()
    body = ParagraphStyle("body", fontName="Vera", fontSize=8.5, leading=11)
    small = ParagraphStyle("small", parent=body, fontSize=7.5, leading=9.5)
    mono = ParagraphStyle("mono", parent=body, fontName="Courier", fontSize=6.5, leading=8)
    heading = ParagraphStyle(
        "h2",
        parent=body,
        fontName="Vera-Bold",
        fontSize=11,
        leading=14,
        spaceBefore=10,
        spaceAfter=4,
    )
    title = ParagraphStyle("h1", parent=body, fontName="Vera-Bold", fontSize=16, leading=20)

    def p(text: object, style: ParagraphStyle = body) -> Paragraph:
        # A PDF cannot isolate text the way a page's <bdi> does: a direction control is
        # written out instead, so it reorders nothing around it and a reader sees it was there.
        shown = escape(controls_spelled_out(str(text))).replace("\n", "<br/>")
        # Vera has no arrow (a change's "old → new"): PDF's standard Symbol font has one, as
        # every viewer does Courier
        shown = shown.replace("→", '<font name="Symbol">→</font>')
        return Paragraph(shown, style)

    def grid(rows: Sequence[list[Any]], widths: list[float], header: bool = True) -> Table:
        # A cell taller than a page (a comment of any length) splits across pages
        table = Table(rows, colWidths=widths, repeatRows=1 if header else 0, splitInRow=1)
        commands: list[Any] = [
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#b8bec9")),
            ("LEFTPADDING", (0, 0), (-1, -1), 3),
            ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ]
        if header:
            commands.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8ebf0")))
        table.setStyle(TableStyle(commands))
        return table

    view, incident = record.view, record.view.incident
    tz = view.agreement.timezone

    def when(instant: datetime | None) -> str:
        return fmt.zoned(instant, tz) if instant else ""

    story: list[Flowable] = [
        p(record.title, title),
        p(
            f"Exported by {record.exported_by} at {when(record.exported_at)}. Times are the "
            f"center's, in its time zone {tz}, with UTC beside them.",
            small,
        ),
        Spacer(1, 6),
        p("Facts", heading),
    ]
    facts = [
        ("Incident", f"{incident.incident_ref} ({incident.id})"),
        ("Center", f"{view.agreement.center_name} ({incident.center_id}), {tz}"),
        ("Product and lot", f"{incident.product_code}, lot {incident.lot_number}"),
        ("Chain of identity", incident.chain_of_identity),
        (
            "Severity",
            incident.severity
            + (f" (rule: {incident.severity_rule})" if incident.severity_rule else ""),
        ),
        ("Status", incident.status),
        ("Disposition", view.disposition_label),
        ("Opened", when(incident.opened_at)),
        ("Closed", when(incident.closed_at)),
        ("Plan", view.plan),
        ("Agreement version", incident.agreement_version),
        ("Approved agreements", view.approved_version),
        ("Template version", incident.template_version or "files on disk"),
        ("Notify within deadline", when(incident.notify_deadline)),
        ("First notice delivered", when(incident.first_delivered_at)),
    ]
    facts += [(label, day) for _, label, day in view.key_dates if day]
    facts += [
        (f"Failed: {a['attribute']}", f"result {a['result']} (specification {a['specification']})")
        for a in incident.failed_attributes
    ]
    facts += view.clinical_facts(with_utc=True)
    offer = view.oos_release
    if offer:
        asked = ", ".join(offer.asked) or "nobody"
        facts.append(("Regulatory pathway", f"{offer.name}; asked to decide: {asked}"))
        facts += [
            (
                f"Checklist: {item.label}",
                f"{item.reference}, confirmed {when(item.confirmed_at)}"
                if item.reference
                else "not yet on file",
            )
            for item in offer.checklist
        ]
    if incident.summary:
        facts.append(("Summary", incident.summary))
    story.append(grid([[p(k), p(v)] for k, v in facts], [150, 620], header=False))

    story.append(p("Notifications", heading))
    rows: list[list[Any]] = [
        [p(h, small) for h in ("Recipient", "Step", "Due", "Sent", "Status", "Message-ID")]
    ]
    for n in view.notifications:
        status = f"{n.status}, {n.attempts} attempt{'s' if n.attempts != 1 else ''}"
        if n.last_error:
            status += f": {n.last_error}"
        rows.append(
            [
                p(f"{n.recipient_name} <{n.recipient_email}> ({n.role})", small),
                p(f"{step_name(n.kind, n.level)}: {n.template}", small),
                p(when(n.due_at), small),
                p(when(n.sent_at), small),
                p(status, small),
                p(n.message_id, mono),
            ]
        )
    story.append(grid(rows, [150, 120, 85, 85, 110, 220]))

    story.append(p("Confirmations and decisions", heading))
    if not view.answers:
        story.append(p("None."))
    for answer in view.answers:
        text = (
            f"{view.answer_title(answer, noun=True)} by {answer.email} ({answer.role}), "
            f"round {answer.round}, at {when(answer.at)}: {AckResponse(answer.response).label}."
        )
        if answer.comment:
            text += f" Comment: {answer.comment}"
        text += "".join(f" {fmt.sentence(k)}: {v}." for k, v in view.answer_facts(answer))
        story.append(p(text))
    if view.callback_tasks:
        story.append(p("Callback tasks", heading))
    for task in view.callback_tasks:
        text = f"{fmt.sentence(task.status)}: call {task.requested_by} ({task.role})"
        text += f" on {task.phone}" if task.phone else ""
        text += f", asked {when(task.requested_at)}"
        text += f", closed by the decision of {when(task.closed_at)}." if task.closed_at else "."
        text += f" Comment: {task.comment}" if task.comment else ""
        story.append(p(text))

    story.append(p("Events", heading))
    changed = view.event_changes
    story.append(
        grid(
            [[p(h, small) for h in ("Event", "Type", "Occurred", "Received", "What it changed")]]
            + [
                [
                    p(e.event_id, small),
                    p(e.type, small),
                    p(when(e.occurred_at), small),
                    p(when(e.received_at), small),
                    p("\n".join(c.text for c in changed.get(e.event_id, [])), small),
                ]
                for e in view.events
            ],
            [170, 80, 155, 155, 210],
        )
    )

    story.append(p("Audit entries", heading))
    story.append(
        grid(
            [
                [
                    p(h, small)
                    for h in ("#", "At", "Action", "Actor", "Detail", "Entry hash / previous hash")
                ]
            ]
            + [
                [
                    p(e.seq, small),
                    p(when(e.at), small),
                    p(e.action, small),
                    p(e.actor, small),
                    p(detail_text(e), small),
                    p(f"{e.entry_hash} {e.prev_hash}", mono),
                ]
                for e in view.trail
            ],
            [28, 82, 100, 110, 200, 250],
        )
    )
    story.append(p("Audit trail digest", heading))
    story.append(p(f"As of entry {record.as_of}, sha256 {record.digest}"))
    story.append(
        p(
            "Every entry above recomputes to its hash."
            if not record.altered
            else f"Entries whose content no longer matches their hash: {record.altered}.",
            small,
        )
    )
    story.append(
        p(
            f"Entry {record.as_of} is this incident's newest, the export of this record. "
            f"`oos-notify audit verify --as-of {record.as_of}` checks the whole trail and prints "
            "this digest for as long as nothing up to that entry is changed.",
            small,
        )
    )

    out = io.BytesIO()
    document = SimpleDocTemplate(
        out,
        pagesize=landscape(A4),
        title=record.title,
        subject=f"audit trail digest as of entry {record.as_of}: {record.digest}",
        author="oos-notify",
        leftMargin=12 * mm,
        rightMargin=12 * mm,
        topMargin=12 * mm,
        bottomMargin=12 * mm,
        creator="oos-notify",
        # Invariant: no wall-clock time or random identifier, which would change the bytes
        invariant=1,
    )
    created = _pdf_date(record.created_at)

    def dated(canvas: Any, _document: Any) -> None:
        canvas.setDateFormatter(lambda *_: created)

    document.build(story, onFirstPage=dated, onLaterPages=dated)
    return out.getvalue()
