"""Email content from Jinja2 templates: one folder per message, overridable per center.

``templates/<name>/subject.txt``, ``body.txt`` and ``body.html``; a center overrides any of them
under ``templates/centers/<site-or-system-id>/<name>/``. Rendering is sandboxed, HTML is
autoescaped, and an undefined variable is an error (caught by ``check-config``, not at 3 a.m.).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from jinja2 import (
    BaseLoader,
    DictLoader,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    select_autoescape,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup
from pydantic import BaseModel

from oos_notify.addresses import as_one_line
from oos_notify.agreements.config import IndicationWindow, InfusionWindow
from oos_notify.agreements.durations import Duration
from oos_notify.agreements.vocabulary import Disposition, KeyDate

PARTS = ("subject.txt", "body.txt", "body.html")
LAYOUTS = ("_layout.txt", "_layout.html")
"""Shared layouts the message parts extend; part of every message's template version."""
MAX_SUBJECT_LENGTH = 250
"""What a subject is cut to whatever its template printed: a header that cannot grow."""
SUBJECT_LIMIT = 78
"""What ``check-config`` lets a subject template render to for the sample incident: a phone's
lock screen and a mail list show about this much, and RFC 5322 asks lines to keep to it."""


class RenderError(Exception):
    """A template is missing or fails to render; ``file`` names the template file."""

    def __init__(self, file: str, message: str) -> None:
        self.file = file
        self.message = message
        super().__init__(f"{file}: {message}")


# --- the context every template sees --------------------------------------------------------


class FailedAttributeView(BaseModel):
    attribute: str
    specification: str
    result: str
    method: str | None = None


class KeyDateView(BaseModel):
    name: str
    label: str
    date: str


class PersonView(BaseModel):
    name: str
    email: str | None = None
    phone: str | None = None
    role: str | None = None


class InfusionWindowView(BaseModel):
    """The label's window for infusing the product after lymphodepletion, with its first and
    last days (``repeat_after``: the last) once the date it counts from is known. Whether to
    repeat lymphodepletion after it is the treating physician's decision."""

    earliest: str
    latest: str
    counted_from: str
    repeat_after: str | None
    first_day: str | None = None
    indication: str | None = None
    """The indication the window is the label's for; None where one window holds for all."""
    source: str | None = None
    """The label and section the window comes from."""


class GuidanceView(BaseModel):
    """What a failed attribute means clinically, from the manufacturer's config: for a product
    not yet given, and for a patient who received it."""

    attribute: str
    not_infused: str
    infused: str
    source: str


class ShipperHoldView(BaseModel):
    """How long a product still in its shipper may be quarantined in it."""

    hold: str
    """The shipper's hold time in words: ``9 days``."""
    until: str | None
    """The day the hold time ends (counted from the shipment day), once that day is known."""


class ChecklistItemView(BaseModel):
    label: str
    reference: str | None
    confirmed_at: str | None
    gates: str | None = None
    """The step it must be on file before (``shipment``, ``infusion``, ``closing``)."""


class OosReleaseView(BaseModel):
    """The regulatory pathway of an out-of-specification product offered for release."""

    pathway: str
    checklist: list[ChecklistItemView]
    outstanding: int
    asked: list[PersonView] = []
    """Who was asked to decide, with their numbers where the agreement has them."""
    requests_supply: bool = False
    """The pathway words the decision as the physician's request for supply (the EU's)."""
    awaiting: list[str] = []
    """The documents the pathway puts before the decision that are not yet on file."""


class RemanufactureView(BaseModel):
    """What re-manufacture means for the patient; None where the manufacturer has not said."""

    new_apheresis_needed: bool | None = None
    expected_release: str | None = None
    bridging_therapy_needed: bool | None = None


class WithinSpecBasisView(BaseModel):
    assignable_cause: str
    certificate_of_analysis: str


class IncidentView(BaseModel):
    id: str
    ref: str
    status: str
    severity: str
    severity_rule: str | None = None
    """The rule that chose the severity, when a rule did: why the clock is as fast as it is."""
    disposition: str | None
    disposition_label: str | None
    product_code: str
    product_name: str
    lot_number: str
    chain_of_identity: str
    summary: str | None
    failed_attributes: list[FailedAttributeView]
    key_dates: list[KeyDateView]
    opened_at: str
    product_status: str | None = None
    product_status_label: str | None = None
    infused: bool = False
    infused_at: str | None = None
    late_result: bool = False
    """The escalation is for a result that came after release (the late-result plan)."""
    microbial: bool = False
    """A failed attribute is a microbial test (sterility, mycoplasma, Gram stain)."""
    infusion_window: InfusionWindowView | None = None
    infusion_windows: list[InfusionWindowView] = []
    """Every indication's window, where the product's differ and the incident names none."""
    lymphodepletion_started: str | None = None
    """The day lymphodepletion started, once it has (and the product is not infused)."""
    shipper_hold: ShipperHoldView | None = None
    """While the product is shipped or at the center and its shipper's hold time is known."""
    guidance: list[GuidanceView] = []
    """The clinical guidance for each failed attribute that has one."""
    unguided: list[str] = []
    """Failed attributes without configured guidance."""
    oos_release: OosReleaseView | None = None
    remanufacture: RemanufactureView | None = None
    within_spec_basis: WithinSpecBasisView | None = None
    decision_due: str | None = None
    """When a decision still missing is escalated."""
    drill: bool = False
    """A practice incident: every message says DRILL in its subject and first line."""


class CenterView(BaseModel):
    id: str
    name: str
    health_system: str
    timezone: str
    on_call_phone: str | None = None
    stopping_roles: str = "the coordinator or the treating physician"
    """Who may stop the escalation, as a sentence fragment."""
    call_list: list[PersonView] = []
    """The people of the roles that stop the escalation who have a phone number."""


class AckLinkView(BaseModel):
    url: str
    expires_at: str
    enrol_url: str | None = None
    """Where a decider with no passkey yet sets one up, from the same link."""


class SignatureView(BaseModel):
    printed_name: str
    meaning: str
    signed_at: str
    method: str | None = None
    """How the signer was identified, in words (``signatures.METHOD_LABELS``)."""


class RevisionView(BaseModel):
    """A decision QA recorded for a decider, and why."""

    reason: str
    recorded_by: str


class AcknowledgementView(BaseModel):
    by: str
    role: str
    at: str
    response: str
    answer: str = ""
    """The answer's code (``received``, ``call_me``, ``accept_oos_product``...): what a subject
    names in a word where the label would not fit."""
    comment: str | None
    signature: SignatureView | None = None
    revision: RevisionView | None = None
    phone: str | None = None
    attribution: str | None = None
    """Who the record says confirmed, where the address is a shared mailbox's: "confirmed by
    <name> via <address>", or "confirmed by the shared mailbox <address>"."""


class FailedDeliveryView(BaseModel):
    """A notification that failed for good, as the QA report describes it."""

    recipient: PersonView
    template: str
    failed_at: str
    attempts: int
    smtp_code: int | None
    reply: str
    """The mail server's reply, or why the message could not be built."""
    never_sent: bool = False
    """The message could not be built (a template error, a name or an address that cannot be
    written in a header), so no mail server saw it."""
    bounced: bool = False
    """A mail server accepted the message and later returned it as undeliverable."""
    brought_forward: list[PersonView] = []
    """Who the failure brought a notice forward for, at once (the role's backup, or its next
    step): empty when nothing was."""


class ForwardedReplyView(BaseModel):
    """A center's reply by email that did not acknowledge, as QA receives it forwarded."""

    sender: PersonView
    received_at: str
    subject: str
    text: str
    reason: str
    """Why it was not taken as an acknowledgement: "it does not confirm", ..."""
    request: str | None = None
    """What the reply seems to ask or report that the service could not take as written (a
    date it cannot read for sure, say): QA's message shows it first."""
    verified: bool = True
    """False when nothing proves who sent it (no trusted, aligned authentication)."""


class CallTaskView(BaseModel):
    """A phone call the manufacturer must make to the center (a call task), as its caller and
    the roles it escalates to read it."""

    id: str
    reason: str
    caller_role: str
    numbers: list[PersonView]
    """Whom to call, the center's on-call line first."""
    opened_at: str
    due_at: str
    api_path: str
    """Where the call is recorded: ``POST`` the reached name, number, time and outcome."""


class RegulatoryClockView(BaseModel):
    """A report owed to an authority, as its reminder and escalation show it."""

    label: str
    source: str
    started_by: str
    """What started it, in words: ``the infusion``."""
    started_at: str
    due_at: str
    missed: bool
    """The due time has passed without a report reference."""


class CenterReportView(BaseModel):
    """What a center's contact said from their link or in a reply, as QA is told of it."""

    by: PersonView
    kind: str
    """``lymphodepletion_started``, ``lymphodepletion_postponed``, ``product_received`` or
    ``call_me``."""
    label: str
    day: str | None = None
    phone: str | None = None
    call_window: str | None = None
    """When to call, in the center's time zone; None: as soon as possible."""
    comment: str | None = None
    source: str
    """``link`` or ``reply``."""
    at: str


class MessageContext(BaseModel):
    """Everything a template may use. Identifiers only: the chain-of-identity is the patient."""

    incident: IncidentView
    center: CenterView
    recipient: PersonView
    manufacturer: str
    qa_contact: PersonView | None
    step_level: int
    ack: AckLinkView | None
    """The recipient's own link: to acknowledge, or (``asks_decision``) to decide."""
    asks_decision: bool = False
    escalates_at: str | None = None
    """When the escalation goes on to the next contacts of the plan if nobody confirms: the
    deadline a notice with a link asks to be confirmed by (none after the last step)."""
    replies_confirm: bool = False
    """A reply to this notice saying "received" confirms it as the link does (the service reads
    its replies and the notice can be acknowledged)."""
    acknowledgement: AcknowledgementView | None
    """The acknowledgement of the current round of notices, once there is one."""
    decision: AcknowledgementView | None = None
    """The decision in force on an out-of-specification product, once there is one."""
    confirmations: list[AcknowledgementView] = []
    """The current round's confirmations that stopped nothing (a cell lab's, say)."""
    callback: AcknowledgementView | None = None
    """A decider's request to be called, while it is open."""
    failed_delivery: FailedDeliveryView | None = None
    forwarded_reply: ForwardedReplyView | None = None
    call_task: CallTaskView | None = None
    """The call task a message to its caller, or its escalation, is about."""
    regulatory_clock: RegulatoryClockView | None = None
    center_report: CenterReportView | None = None


DISPOSITION_LABELS = {
    Disposition.UNDER_INVESTIGATION: "Under investigation",
    Disposition.REMANUFACTURE: "Re-manufacture planned",
    Disposition.OOS_RELEASE_OFFERED: "Out-of-specification release offered for physician decision",
    Disposition.CANCELLED: "Lot cancelled",
    Disposition.RELEASED_WITHIN_SPEC: "Released within specification",
}

KEY_DATE_LABELS = {
    KeyDate.APHERESIS: "Apheresis",
    KeyDate.LYMPHODEPLETION_START: "Lymphodepletion start",
    KeyDate.LYMPHODEPLETION_END: "Lymphodepletion end",
    KeyDate.PLANNED_INFUSION: "Planned infusion",
    KeyDate.PRODUCT_SHIPMENT: "Product shipment",
}


def local_time(instant: datetime, timezone: str) -> str:
    """An instant as the center reads it: ``Tue 24 Nov 2026, 03:12 CST``."""
    return instant.astimezone(ZoneInfo(timezone)).strftime("%a %d %b %Y, %H:%M %Z")


def key_date_views(key_dates: dict[str, str]) -> list[KeyDateView]:
    order = list(KeyDate)
    views = []
    for name in sorted(key_dates, key=lambda k: order.index(KeyDate(k))):
        when = date.fromisoformat(key_dates[name])
        views.append(KeyDateView(name=name, label=KEY_DATE_LABELS[KeyDate(name)], date=day(when)))
    return views


def disposition_label(disposition: str | None) -> str | None:
    return DISPOSITION_LABELS[Disposition(disposition)] if disposition else None


def day(value: date) -> str:
    """A date as the messages write it: ``Mon 30 Nov 2026``."""
    return value.strftime("%a %d %b %Y")


_COUNTED_FROM = {
    KeyDate.LYMPHODEPLETION_START: "lymphodepletion starts",
    KeyDate.LYMPHODEPLETION_END: "lymphodepletion ends",
}
_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "bd": "business day"}


def spoken(duration: Duration) -> str:
    """A duration in words: ``2 days``."""
    unit = _UNITS[duration.unit]
    return f"{duration.amount} {unit}{'' if duration.amount == 1 else 's'}"


def infusion_window_view(
    window: InfusionWindow | None, key_dates: dict[str, str]
) -> InfusionWindowView | None:
    """The label's infusion window, with its first and last days once the date it counts from
    is known (a window of whole days ends on a calendar day)."""
    if window is None:
        return None
    anchor = key_dates.get(window.counted_from.value)
    start = date.fromisoformat(anchor) if anchor else None
    return InfusionWindowView(
        earliest=spoken(window.earliest),
        latest=spoken(window.latest),
        counted_from=_COUNTED_FROM[window.counted_from],
        repeat_after=day(start + timedelta(days=window.latest.as_timedelta().days))
        if start
        else None,
        first_day=day(start + timedelta(days=window.earliest.as_timedelta().days))
        if start
        else None,
        indication=window.name if isinstance(window, IndicationWindow) else None,
        source=window.source,
    )


# --- rendering ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    html: str
    version: str
    """A hash of the template sources used, recorded with each delivery for the audit trail."""


@dataclass(frozen=True)
class TemplateSet:
    """Every template file a center's messages can use, as its override chain resolves them,
    with a content hash: what an incident is rendered with for the whole of its life."""

    version: str
    files: Mapping[str, str]
    """Template name (``escalation_final/body.txt``, ``_layout.html``) to source."""

    @classmethod
    def of(cls, files: Mapping[str, str]) -> TemplateSet:
        canonical = json.dumps(dict(files), sort_keys=True, separators=(",", ":"))
        return cls(hashlib.sha256(canonical.encode()).hexdigest()[:16], dict(files))


SnapshotSource = Callable[[str], TemplateSet | None]
"""Finds a stored template set by its version."""


class UnknownTemplateVersion(RenderError):
    """An incident names a template set that is neither in memory nor in storage."""

    def __init__(self, version: str) -> None:
        super().__init__(f"template set {version}", "is not stored in the database")


class Renderer:
    """Renders messages for a center; keeps one sandboxed environment per override chain, and
    one per template set an incident was planned with.

    The files on disk are read as they are when first used and kept for the life of the
    process (an edit applies at the next start, as the stored template sets do): each template
    is compiled once, and its list of names and its hashes worked out once, not on every
    message."""

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self._environments: dict[tuple[str, ...], ImmutableSandboxedEnvironment] = {}
        self._by_search_path: dict[tuple[str, ...], ImmutableSandboxedEnvironment] = {}
        self._digests: dict[str, bytes] = {}
        self._names: dict[ImmutableSandboxedEnvironment, frozenset[str]] = {}
        self._versions: dict[tuple[ImmutableSandboxedEnvironment, str], str] = {}
        self._snapshots: dict[str, ImmutableSandboxedEnvironment] = {}
        self._snapshot_source: SnapshotSource | None = None

    def keep_snapshots(self, source: SnapshotSource) -> None:
        """Where ``render(..., version=...)`` finds a template set it has not seen yet."""
        self._snapshot_source = source

    def snapshot(self, center_ids: tuple[str, ...]) -> TemplateSet:
        """The center's templates as they are on disk now."""
        environment = self._environment(center_ids)
        loader = environment.loader
        assert loader is not None
        files = {
            name: loader.get_source(environment, name)[0]
            for name in sorted(self._available(environment))
            if not name.startswith("centers/")
        }
        return TemplateSet.of(files)

    def _snapshot_environment(self, version: str) -> ImmutableSandboxedEnvironment:
        environment = self._snapshots.get(version)
        if environment is None:
            found = self._snapshot_source(version) if self._snapshot_source else None
            if found is None:
                raise UnknownTemplateVersion(version)
            environment = _sandbox(DictLoader(dict(found.files)))
            self._snapshots[version] = environment
        return environment

    def _available(self, environment: ImmutableSandboxedEnvironment) -> frozenset[str]:
        """The names of the templates an environment has, listed once."""
        names = self._names.get(environment)
        if names is None:
            names = self._names[environment] = frozenset(environment.list_templates())
        return names

    def _files_version(self, environment: ImmutableSandboxedEnvironment, name: str) -> str:
        """A hash of the files message ``name`` is rendered from on disk (its parts and the
        layouts), worked out once per environment and message."""
        version = self._versions.get((environment, name))
        if version is None:
            digest = hashlib.sha256()
            for template in (*(f"{name}/{part}" for part in PARTS), *LAYOUTS):
                if template in LAYOUTS and template not in self._available(environment):
                    continue
                filename = environment.get_template(template).filename
                assert filename is not None
                digest.update(self._source_digest(filename))
            version = self._versions[(environment, name)] = digest.hexdigest()[:16]
        return version

    def _source_digest(self, filename: str) -> bytes:
        """A template file's hash, read once (several environments share the defaults)."""
        digest = self._digests.get(filename)
        if digest is None:
            digest = self._digests[filename] = hashlib.sha256(Path(filename).read_bytes()).digest()
        return digest

    def search_path(self, center_ids: tuple[str, ...]) -> list[Path]:
        """Where a center's templates are looked up: the site, its health system, the defaults."""
        overrides = [self.templates_dir / "centers" / cid for cid in center_ids]
        return [*(p for p in overrides if p.is_dir()), self.templates_dir]

    def _environment(self, center_ids: tuple[str, ...]) -> ImmutableSandboxedEnvironment:
        environment = self._environments.get(center_ids)
        if environment is None:
            # Centers with the same overrides share an environment and so its compiled
            # templates: compiling them again for each of a hundred sites took seconds at start.
            search_path = tuple(str(p) for p in self.search_path(center_ids))
            environment = self._by_search_path.get(search_path) or _sandbox(
                FileSystemLoader(list(search_path))
            )
            self._by_search_path[search_path] = environment
            self._environments[center_ids] = environment
        return environment

    def _failing_template(self, exc: BaseException) -> tuple[str, int] | None:
        """The template file and line a render error happened in (Jinja puts them in the
        traceback): names a center's override or the shared layout rather than the message."""
        root = self.templates_dir.resolve()
        found = None
        traceback = exc.__traceback__
        while traceback is not None:
            filename = traceback.tb_frame.f_code.co_filename
            if Path(filename).resolve().is_relative_to(root):
                found = (filename, traceback.tb_lineno)
            traceback = traceback.tb_next
        return found

    def source_of(self, template: str, center_ids: tuple[str, ...] = ()) -> str:
        """The file a center's ``template`` (``escalation_final/subject.txt``) is read from: its
        own override, its health system's, or the default."""
        filename = self._environment(center_ids).get_template(template).filename
        return filename or template

    def exists(self, name: str, center_ids: tuple[str, ...] = ()) -> bool:
        available = self._available(self._environment(center_ids))
        return all(f"{name}/{part}" in available for part in PARTS)

    def render(
        self,
        name: str,
        context: MessageContext,
        center_ids: tuple[str, ...] = (),
        version: str | None = None,
    ) -> RenderedMessage:
        """Render the three parts of message ``name`` as the center would receive it: from the
        template set ``version`` when given (the one its incident was planned with), else from
        the files on disk. A message the set does not have (one the service learned to send
        after the incident opened) comes from the files on disk."""
        environment = self._environment(center_ids)
        if version is not None:
            snapshot = self._snapshot_environment(version)
            available = self._available(snapshot)
            if all(f"{name}/{part}" in available for part in PARTS):
                environment = snapshot
            else:
                version = None
        values = context.model_dump()
        rendered: list[str] = []
        for part in PARTS:
            template_name = f"{name}/{part}"
            try:
                template = environment.get_template(template_name)
                rendered.append(template.render(values))
            except Exception as exc:  # a template can raise anything (1 + 'a'): it is its error
                found = self._failing_template(exc)
                where = getattr(exc, "filename", None) or (found[0] if found else template_name)
                line = getattr(exc, "lineno", None) or (found[1] if found else None)
                at = f"line {line}: " if line else ""
                detail = exc.message if isinstance(exc, TemplateError) else str(exc)
                raise RenderError(where, f"{at}{detail or type(exc).__name__}") from exc
        # A subject template may print anything, a summary's line breaks or an SMTP reply
        # included: the subject is one header line whatever it printed.
        subject = as_one_line(rendered[0])
        if not subject:
            raise RenderError(f"{name}/subject.txt", "renders an empty subject")
        message = RenderedMessage(
            subject=subject[:MAX_SUBJECT_LENGTH],
            text=rendered[1],
            html=rendered[2],
            version=version or self._files_version(environment, name),
        )
        return drill_marked(message) if context.incident.drill else message


DRILL_LINE = "DRILL: a practice incident. No real patient or product lot is concerned."
"""The first line of every message of a drill, whatever its template (a center's own too)."""
_BODY_TAG = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


def drill_marked(message: RenderedMessage) -> RenderedMessage:
    """A drill's message: DRILL first in its subject (kept within ``SUBJECT_LIMIT``, cut at a
    word) and its first line, in both parts, so nobody takes it for a real patient's."""
    subject = f"DRILL {message.subject}"
    if len(subject) > SUBJECT_LIMIT:
        subject = subject[: SUBJECT_LIMIT + 1].rsplit(" ", 1)[0].rstrip(" ,:;-")
    banner = (
        '<p style="margin:0;padding:10px 16px;background:#fff3c4;color:#5c4400;font-size:14px;'
        f'font-weight:bold;">{DRILL_LINE}</p>'
    )
    found = _BODY_TAG.search(message.html)
    at = found.end() if found else 0
    return RenderedMessage(
        subject=subject,
        text=f"{DRILL_LINE}\n\n{message.text.lstrip()}",
        html=f"{message.html[:at]}{banner}{message.html[at:]}",
        version=message.version,
    )


# The filters below are kept per value: every message of a batch prints the same few links,
# addresses and numbers, and each took a regex or a quoting pass per use.


@functools.lru_cache(maxsize=4096)
def destination(url: str) -> str:
    """Where a link leads, as written under its button (the ``destination`` filter):
    ``https://oos.manufacturer.example/…``, so the reader sees the site before pressing it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…"


@functools.lru_cache(maxsize=4096)
def phone_link(number: str) -> Markup:
    """A phone number as a ``tel:`` link that does not wrap (the ``phone`` filter, HTML only):
    tapped on a phone it dials, and it is never split over two lines."""
    dialled = re.sub(r"[^0-9]", "", number)
    if number.strip().startswith("+"):
        dialled = "+" + dialled
    return Markup('<a href="tel:{}" style="white-space:nowrap;"><bdi>{}</bdi></a>').format(
        dialled, number
    )


@functools.lru_cache(maxsize=4096)
def mailto(address: str, subject: str | None = None) -> str:
    """A ``mailto:`` link to one address (the ``mailto`` filter: ``{{ qa_contact.email|mailto(
    subject=incident.ref) }}``). A valid address may hold ``?``, ``&``, ``#`` or ``%`` before
    its ``@``; written raw, they would start a query that adds recipients, headers or a body to
    the message the reader's mail program writes. Everything but the ``@`` is percent-encoded,
    and the subject is one line, encoded as a whole."""
    link = "mailto:" + quote(address, safe="@")
    if subject:
        link += "?subject=" + quote(as_one_line(subject), safe="")
    return link


def _sandbox(loader: BaseLoader) -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(
        loader=loader,
        # Templates are fixed for the life of the process (see Renderer): not checked on disk
        # again at each use.
        auto_reload=False,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["mailto"] = mailto
    environment.filters["phone"] = phone_link
    environment.filters["destination"] = destination
    return environment
