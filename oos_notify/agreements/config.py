"""Notification agreements and escalation plans: the config models, their loading and merging.

A health system's file sets defaults and system-level contacts for its sites; a site overrides
what it needs. ``Agreements.effective(center_id)`` merges both into the agreement an incident
is planned with, and that merged value is what gets snapshotted on the incident.
"""

from __future__ import annotations

import copy
import hashlib
import json
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, time
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import yaml
from holidays.registry import EntityLoader
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)
from yaml._yaml import CParser
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver

from oos_notify.addresses import STORED, Address, Name
from oos_notify.agreements.durations import Duration, DurationField, parse_duration
from oos_notify.agreements.vocabulary import (
    GATED_TRANSITIONS,
    MANUFACTURER_PREFIX,
    OPENING_EVENT_TYPES,
    CenterRole,
    EventType,
    KeyDate,
    ManufacturerRole,
    Severity,
    Transition,
)

MAX_CONFIG_FILE_BYTES = 1024 * 1024
MAX_CONFIG_DEPTH = 32
MAX_CONFIG_VALUES = 50_000
_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"

Identifier = Annotated[str, Field(pattern=_ID)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r}: use an IANA name such as America/Chicago"
        ) from None
    return value


TimeZoneName = Annotated[str, AfterValidator(_check_timezone)]
Phone = Annotated[str, Field(min_length=3, max_length=40, pattern=r"^\+?[0-9][0-9 ()./-]*$")]
"""A number a clinician can dial, as written: ``+1 312 555 0142``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- people -------------------------------------------------------------------------------


class Contact(_Strict):
    """A person or shared mailbox at a treatment center or its health system."""

    id: Identifier
    name: Name
    email: Address
    phone: Phone | None = None
    roles: list[CenterRole] = Field(min_length=1)
    decider: bool = False
    """An individual who may decide on an out-of-specification product: a decision belongs to
    one person, so a shared mailbox is never marked as one."""
    shared: bool = False
    """A mailbox several people read (``ct-coord@``): a confirmation through its link asks who
    is confirming and records that person; a confirmation by email reply is the mailbox's."""

    @model_validator(mode="after")
    def _a_shared_mailbox_does_not_decide(self) -> Self:
        if self.shared and self.decider:
            raise ValueError(
                f"contact {self.id!r} is marked both shared and decider: a decision belongs to "
                "one person, so a shared mailbox cannot be a decider"
            )
        return self


class ManufacturerContact(_Strict):
    id: Identifier
    name: Name
    email: Address
    phone: Phone | None = None
    roles: list[ManufacturerRole] = Field(min_length=1)


SourceText = Annotated[str, Field(min_length=1, max_length=300)]
"""Where a clinical statement comes from (a label's section, a pharmacopoeia chapter)."""
GuidanceText = Annotated[str, Field(min_length=1, max_length=1500)]


class InfusionWindow(_Strict):
    """When a product's label says it is infused, counted from lymphodepletion. Whether to
    repeat lymphodepletion once the window has passed is the treating physician's decision."""

    counted_from: Literal[KeyDate.LYMPHODEPLETION_START, KeyDate.LYMPHODEPLETION_END] = (
        KeyDate.LYMPHODEPLETION_END
    )
    earliest: DurationField
    latest: DurationField
    source: SourceText | None = None
    """The label and section the window is taken from, cited in the messages."""

    @model_validator(mode="after")
    def _days_in_order(self) -> Self:
        if self.earliest.is_business_days or self.latest.is_business_days:
            raise ValueError("an infusion window counts calendar time (2d, 36h), not business days")
        if self.earliest.as_timedelta() > self.latest.as_timedelta():
            raise ValueError(f"earliest {self.earliest} is after latest {self.latest}")
        return self


class IndicationWindow(InfusionWindow):
    """The label's infusion window for one indication of a product (they differ: 2 to 14 days in
    ALL, 2 to 11 in DLBCL, 2 to 6 in FL for tisagenlecleucel)."""

    indication: Identifier
    """What events name in ``indication``: ``dlbcl``."""
    name: Annotated[str, Field(min_length=1, max_length=200)]
    """How a clinician names the indication: ``relapsed or refractory DLBCL``."""
    source: SourceText


class Product(_Strict):
    code: str = Field(pattern=r"^[A-Za-z0-9._-]{1,40}$")
    name: Name
    infusion_window_after_lymphodepletion: InfusionWindow | None = None
    """One window for every indication of the product."""
    infusion_windows: list[IndicationWindow] = Field(default_factory=list, max_length=30)
    """The label's window for each indication, where they differ."""
    shipper_hold: DurationField | None = None
    """How long the product's shipper keeps it at temperature, counted from the day it ships
    (``product_shipment``): a product still in its shipper is quarantined in it only so long."""

    @model_validator(mode="after")
    def _one_kind_of_window(self) -> Self:
        if self.infusion_window_after_lymphodepletion and self.infusion_windows:
            raise ValueError(
                "give infusion_window_after_lymphodepletion (one window for every indication) "
                "or infusion_windows (one per indication), not both"
            )
        names = [w.indication for w in self.infusion_windows]
        repeated = sorted({i for i in names if names.count(i) > 1})
        if repeated:
            raise ValueError(f"indication {repeated[0]!r} is repeated")
        if self.shipper_hold is not None and (
            self.shipper_hold.is_business_days or self.shipper_hold.as_timedelta().days < 1
        ):
            raise ValueError(
                "shipper_hold counts whole calendar days from the shipment day (10d, say)"
            )
        return self

    def indications(self) -> list[str]:
        """The indications an event may name for this product."""
        return [w.indication for w in self.infusion_windows]

    def window_for(self, indication: str | None) -> InfusionWindow | None:
        """The label's window for the indication (the product's only window if it has one)."""
        if self.infusion_window_after_lymphodepletion is not None:
            return self.infusion_window_after_lymphodepletion
        return next((w for w in self.infusion_windows if w.indication == indication), None)


def _guidance_name(value: str) -> str:
    return " ".join(value.split()).casefold()


AttributeName = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_guidance_name)]


class AttributeGuidance(_Strict):
    """What a failed attribute means clinically, reviewed by the manufacturer's medical
    affairs: what it means for a product not yet given, and what to do for a patient who has
    received it. Shown in the messages about a lot that failed it."""

    attribute: AttributeName
    """As events name it (compared without case): ``mycoplasma``."""
    also: list[AttributeName] = Field(default_factory=list, max_length=10)
    """Other names events use for it: ``bacterial and fungal sterility``."""
    not_infused: GuidanceText
    infused: GuidanceText
    source: SourceText

    def names(self) -> list[str]:
        """Every name an event may give the attribute, as compared."""
        return [self.attribute, *self.also]


class ChecklistItem(_Strict):
    """A document the pathway needs on file, the transition it must be on file before, who
    sees to it, and by when after the offer."""

    id: Identifier
    label: Name
    gates: Transition = Transition.INFUSED
    """Recording this transition with the item open is refused (409 naming it)."""
    owner: RecipientField = Field(default_factory=lambda: _parse_recipient("manufacturer:qa"))
    """Who sees to it: a center role (``physician``) or ``manufacturer:<role>``."""
    due: DurationField | None = None
    """How long after the offer the item is due (calendar time); shown on the incident."""

    @model_validator(mode="after")
    def _gates_a_gated_transition(self) -> Self:
        if self.gates not in GATED_TRANSITIONS:
            known = ", ".join(GATED_TRANSITIONS)
            raise ValueError(f"an item gates one of {known}, not {self.gates}")
        if self.due is not None and self.due.is_business_days:
            raise ValueError("an item's due counts calendar time (2d, 36h), not business days")
        return self


class RegulatoryClock(_Strict):
    """A report owed to an authority by a set time after a transition: regulatory affairs is
    reminded before it is due, escalated to when it is missed, and QA closes it with the
    report's reference."""

    id: Identifier
    label: Name
    started_by: Transition
    """The transition that starts it (under a pathway: of the product offered under it)."""
    counted_from: Literal["transition", "discovery"] = "transition"
    """``discovery``: from when the failure became known (the opening event), not from the
    transition; an infusion counts from the time the product was infused."""
    within: DurationField
    remind_before: DurationField | None = None
    owner: RecipientField = Field(
        default_factory=lambda: _parse_recipient("manufacturer:regulatory_affairs")
    )
    escalate: list[RecipientField] = Field(
        default_factory=lambda: [_parse_recipient("manufacturer:qa")]
    )
    """Told, with the owner again, when the clock runs out without a report."""
    source: Annotated[str, Field(min_length=1, max_length=300)]
    """Where the obligation is written: shown in the reminder."""
    pathways: list[Identifier] | None = None
    """For a manufacturer's clock: only at centers whose ``oos_pathway`` is one of these (the
    jurisdiction whose rule it is); every center when absent."""

    @model_validator(mode="after")
    def _calendar_time(self) -> Self:
        for name in ("within", "remind_before"):
            value = getattr(self, name)
            if value is not None and value.is_business_days:
                raise ValueError(f"'{name}' counts calendar time (48h, 45d), not business days")
        if self.remind_before is not None and (
            self.remind_before.as_timedelta() >= self.within.as_timedelta()
        ):
            raise ValueError(
                f"remind_before {self.remind_before} is not shorter than within {self.within}"
            )
        return self


def _distinct(kind: str, ids: Sequence[str]) -> None:
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"{kind} {repeated[0]!r} is repeated")


class OosPathway(_Strict):
    """The regulatory path under which a physician may accept an out-of-specification product
    (expanded access in the US, the manufacturer's risk evaluation and the physician's request
    in the EU), with what must be on file before which transition, and the clocks it starts."""

    id: Identifier
    name: Name
    checklist: list[ChecklistItem] = Field(min_length=1, max_length=20)
    decision_requires: list[Identifier] = Field(default_factory=list)
    """Checklist items on file before a decider may accept (the EU's risk evaluation)."""
    physician_requests_supply: bool = False
    """The decision is worded as the treating physician's request for supply (EU GMP Part IV
    11.53), not as accepting the manufacturer's offer."""
    clocks: list[RegulatoryClock] = Field(default_factory=list, max_length=10)

    @model_validator(mode="after")
    def _distinct_items(self) -> Self:
        ids = [item.id for item in self.checklist]
        _distinct("checklist item", ids)
        _distinct("clock", [clock.id for clock in self.clocks])
        unknown = [i for i in self.decision_requires if i not in ids]
        if unknown:
            raise ValueError(
                f"decision_requires names {unknown[0]!r}, not on the checklist; "
                f"known: {', '.join(ids)}"
            )
        return self


class Manufacturer(_Strict):
    name: Name
    products: list[Product] = Field(min_length=1)
    contacts: list[ManufacturerContact] = Field(default_factory=list)
    severity_rules: list[SeverityRule] | None = Field(default=None, min_length=1)
    oos_pathways: list[OosPathway] = Field(default_factory=list)
    regulatory_clocks: list[RegulatoryClock] = Field(default_factory=list, max_length=10)
    """Clocks every incident starts, whatever its pathway (a deviation report)."""
    clinical_guidance: list[AttributeGuidance] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _distinct_pathways(self) -> Self:
        _distinct("oos pathway", [p.id for p in self.oos_pathways])
        _distinct("regulatory clock", [c.id for c in self.regulatory_clocks])
        known = [p.id for p in self.oos_pathways]
        for clock in self.regulatory_clocks:
            unknown = [p for p in clock.pathways or [] if p not in known]
            if unknown:
                raise ValueError(
                    f"regulatory clock {clock.id!r} names pathway {unknown[0]!r}; "
                    f"known: {', '.join(known) or 'none'}"
                )
        names = [name for g in self.clinical_guidance for name in g.names()]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"clinical guidance for {repeated[0]!r} is given twice")
        return self

    def pathway(self, pathway_id: str) -> OosPathway | None:
        return next((p for p in self.oos_pathways if p.id == pathway_id), None)


# --- calendar -----------------------------------------------------------------------------


class BusinessHours(_Strict):
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS[:5]), min_length=1)
    start: time = time(8, 0)
    end: time = time(17, 0)

    @model_validator(mode="after")
    def _start_before_end(self) -> Self:
        if self.start >= self.end:
            raise ValueError(f"start {self.start:%H:%M} must be before end {self.end:%H:%M}")
        if len(set(self.days)) != len(self.days):
            raise ValueError("a day is listed twice")
        return self


def _holidays_shorthand(value: Any) -> Any:
    return {"dates": value} if isinstance(value, list) else value


class Holidays(_Strict):
    """Public holidays by country and subdivision (the ``holidays`` package) plus closure dates."""

    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    subdivision: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,10}$")
    dates: list[date] = Field(default_factory=list)
    """Closure dates on top of the public holidays."""
    working: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=list)
    """Public holidays the center works on, by the name the holidays package gives them."""

    @model_validator(mode="after")
    def _known_calendar(self) -> Self:
        if self.subdivision is not None and self.country is None:
            raise ValueError("a subdivision needs its country, e.g. {country: DE, subdivision: NW}")
        subdivisions = _holiday_subdivisions(self.country) if self.country is not None else []
        if subdivisions is None:
            raise ValueError(
                f"no public-holiday calendar for country {self.country!r}: "
                "use an ISO 3166 code that the holidays package knows, such as US or DE"
            )
        if self.working and self.country is None:
            raise ValueError("'working' names public holidays of a country: set 'country' too")
        if self.subdivision is not None and self.subdivision not in subdivisions:
            choices = ", ".join(subdivisions) or "none"
            raise ValueError(
                f"{self.country} has no subdivision {self.subdivision!r}; known: {choices}"
            )
        if self.working and self.country is not None:
            names = _holiday_names(self.country, self.subdivision)
            unknown = [n for n in self.working if n.lower() not in names]
            if unknown:
                raise ValueError(
                    f"{unknown[0]!r} is not a public holiday of {self.country}; "
                    f"known: {', '.join(sorted(names))}"
                )
        return self

    def within(self, system: Holidays) -> Holidays:
        """A site's holidays inside its system's: its own country (else the system's), and
        the closure dates and worked holidays of both."""
        own_country = self.country is not None
        return Holidays(
            country=self.country if own_country else system.country,
            subdivision=self.subdivision if own_country else system.subdivision,
            dates=sorted({*system.dates, *self.dates}),
            working=list(dict.fromkeys([*system.working, *self.working])),
        )


@cache
def _holiday_names(country: str, subdivision: str | None) -> frozenset[str]:
    """The names of a country's public holidays over a few years (lower case)."""
    calendar = holidays.country_holidays(country, subdiv=subdivision, years=range(2024, 2031))
    return frozenset(n.lower() for day in calendar for n in calendar.get_list(day))


@cache
def _holiday_subdivisions(country: str) -> list[str] | None:
    """The subdivision codes of a country the holidays package knows; None for one it does not.
    Only that country's calendar is loaded (listing every country's loaded all 250 of them)."""
    if country not in EntityLoader.get_country_codes():
        return None
    return list(getattr(holidays, country).subdivisions)


HolidaysField = Annotated[Holidays, BeforeValidator(_holidays_shorthand)]


# --- plans --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """A role a step notifies: a center role, or a manufacturer role (``manufacturer:qa``)."""

    role: str
    manufacturer: bool

    def __str__(self) -> str:
        return f"{MANUFACTURER_PREFIX}{self.role}" if self.manufacturer else self.role


def _parse_recipient(value: Any) -> Recipient:
    if isinstance(value, Recipient):
        return value
    if not isinstance(value, str):
        raise ValueError("a recipient is a role name such as 'coordinator'")
    if value.startswith(MANUFACTURER_PREFIX):
        role = value.removeprefix(MANUFACTURER_PREFIX)
        if role not in ManufacturerRole.__members__.values():
            known = ", ".join(MANUFACTURER_PREFIX + r for r in ManufacturerRole)
            raise ValueError(f"unknown manufacturer role {value!r}; known: {known}")
        return Recipient(role, manufacturer=True)
    if value not in CenterRole.__members__.values():
        known = ", ".join(CenterRole)
        raise ValueError(
            f"unknown role {value!r}; known: {known} "
            f"(or {MANUFACTURER_PREFIX}<role> for the manufacturer's people)"
        )
    return Recipient(value, manufacturer=False)


RecipientField = Annotated[
    Recipient,
    BeforeValidator(_parse_recipient),
    PlainSerializer(str, return_type=str),
]


class Timing(_Strict):
    """When a step is due: ``after`` the trigger, or ``by`` a duration ``before`` a key date."""

    after: DurationField | None = None
    before: KeyDate | None = None
    by: DurationField | None = None
    business_hours: bool = False

    @model_validator(mode="after")
    def _one_anchor(self) -> Self:
        if self.after is not None and self.before is not None:
            raise ValueError("a step has either 'after' or 'before', not both")
        if self.after is None and self.before is None:
            raise ValueError("a step needs 'after' (e.g. after: 2h) or 'before' with 'by'")
        if self.before is not None and self.by is None:
            raise ValueError("'before' needs 'by', e.g. before: lymphodepletion_start, by: 48h")
        if self.by is not None and self.before is None:
            raise ValueError("'by' goes with 'before'")
        return self


class Step(Timing):
    notify: list[RecipientField] = Field(min_length=1)
    template: Identifier


class PhysicianStep(Timing):
    """A message to the patient's treating physician named in the event, due like a plan step;
    only the physician's own confirmation or decision cancels it."""

    template: Identifier


class PatientStep(Timing):
    when: Literal["acknowledged", "unacknowledged"]
    notify: list[RecipientField] = Field(min_length=1)
    template: Identifier


DEFAULT_STOPPING_ROLES = (CenterRole.COORDINATOR, CenterRole.PHYSICIAN)
DEFAULT_DECISION_INFORMS = ("quality", "pharmacy", f"{MANUFACTURER_PREFIX}regulatory_affairs")
DEFAULT_OUTCOME_ROLES = ("coordinator", "cell_lab", "pharmacy", "quality")
MAX_DECISION_REMINDERS = 10


class DecisionRule(_Strict):
    """Who decides on an out-of-specification product offered for release, who else is told of
    the offer, and by when the decision is needed before somebody else hears it is missing."""

    ask: list[CenterRole] = Field(default_factory=lambda: [CenterRole.PHYSICIAN], min_length=1)
    """Roles whose contacts marked ``decider: true`` are asked; nobody else is."""
    inform: list[RecipientField] = Field(
        default_factory=lambda: [_parse_recipient(r) for r in DEFAULT_DECISION_INFORMS]
    )
    due: Timing | None = None
    escalate: list[RecipientField] = Field(default_factory=list)
    """Told, with the deciders again, when the decision is still missing at ``due``."""
    reminders: list[Timing] = Field(default_factory=list, max_length=MAX_DECISION_REMINDERS)
    """When the deciders are reminded before ``due`` while the decision is missing."""
    deputies: Literal["never", "when_absent", "always"] = "never"
    """Whether the ``ask`` roles' deciders stand in for a treating physician the event names:
    never, when the physician's decision request comes back as an automatic reply, or always
    (asked with the physician). Without a treating physician they are the deciders."""
    outcome_to: list[RecipientField] = Field(
        default_factory=lambda: [_parse_recipient(r) for r in DEFAULT_OUTCOME_ROLES]
    )
    """Told the decision once it is made: what, by whom, what ships when, the references."""

    @model_validator(mode="after")
    def _escalation_needs_a_deadline(self) -> Self:
        for name in ("escalate", "reminders"):
            if getattr(self, name) and self.due is None:
                raise ValueError(
                    f"'{name}' needs 'due', e.g. due: {{before: lymphodepletion_start, by: 72h}}"
                )
        return self


class CallRule(_Strict):
    """When an incident also needs a phone call, who at the manufacturer makes it, whom they
    call, by when, and who is told by email when the call is still not made by then.

    The rule applies when any condition given holds: the incident's severity is one of
    ``severity``, lymphodepletion starts at most ``lymphodepletion_within`` from now (or has
    started), or the product was infused (``after_infusion``).
    """

    name: str = Field(min_length=1, max_length=100)
    severity: list[Severity] = Field(default_factory=list)
    lymphodepletion_within: DurationField | None = None
    after_infusion: bool = False
    call: RecipientField
    """The manufacturer role that phones the center (``manufacturer:medical_affairs``)."""
    reach: list[CenterRole] = Field(
        default_factory=lambda: [CenterRole.PHYSICIAN, CenterRole.COORDINATOR], min_length=1
    )
    """The center roles whose numbers the call task lists, after the center's on-call line."""
    within: DurationField | None = None
    """How long the caller has; without it the agreement's ``notify_within`` for the
    incident's severity, the promise the call is part of."""
    escalate: list[RecipientField] = Field(min_length=1)
    """Told by email when the call task is still open at its deadline."""

    @model_validator(mode="after")
    def _a_condition_and_a_caller(self) -> Self:
        if not (self.severity or self.lymphodepletion_within or self.after_infusion):
            raise ValueError(
                "a call rule needs a condition: severity, lymphodepletion_within or "
                "after_infusion: true"
            )
        if not self.call.manufacturer:
            raise ValueError(
                f"'call' names the manufacturer's role that phones, e.g. "
                f"{MANUFACTURER_PREFIX}medical_affairs, not the center's {self.call}"
            )
        for setting, duration in (
            ("lymphodepletion_within", self.lymphodepletion_within),
            ("within", self.within),
        ):
            if duration is not None and duration.is_business_days:
                raise ValueError(f"'{setting}' counts every hour (72h, 2d), not business days")
        return self


class Plan(_Strict):
    id: Identifier
    description: str = ""
    critical_uses_business_hours: bool = False
    """Critical incidents ignore ``business_hours: true`` unless the plan sets this."""
    steps: list[Step] = Field(min_length=1)
    patient_communication: list[PatientStep] = Field(default_factory=list)
    stops_escalation: list[CenterRole] = Field(
        default_factory=lambda: list(DEFAULT_STOPPING_ROLES), min_length=1
    )
    """Roles whose confirmation stops the escalation; anybody else's is recorded and stops
    nothing (a cell lab's confirmation must not cancel the physician's step)."""
    decision: DecisionRule | None = None
    """How an out-of-specification product offered for release is decided under this plan;
    without it the offer is refused for incidents under the plan."""
    calls: list[CallRule] = Field(default_factory=list, max_length=20)
    """When an incident under this plan also needs a phone call (``CallRule``)."""
    treating_physician: list[PhysicianStep] | None = Field(default=None, min_length=1)
    """The steps of the patient's treating physician when an event names one; without them the
    physician gets the first step's message at once."""
    on_out_of_office: Literal["escalate_now", "record"] = "escalate_now"
    """What an automatic reply to an escalation notice does: start the round's next step at
    once, or only go on the incident's timeline."""


# --- severity -----------------------------------------------------------------------------


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class SeverityRule(_Strict):
    """Derives the severity of an event that came without one; the first rule that matches wins.

    Every condition given must hold: the event type is one of ``event_type``, a failed
    attribute is one of ``failed_attribute`` (case does not matter), a key date is at most
    ``key_date_within`` away (or already past). A rule with no condition matches everything.
    """

    name: str = Field(min_length=1, max_length=100)
    severity: Severity
    event_type: Annotated[list[EventType], BeforeValidator(_one_or_many)] = Field(
        default_factory=list
    )
    failed_attribute: Annotated[list[str], BeforeValidator(_one_or_many)] = Field(
        default_factory=list
    )
    key_date_within: dict[KeyDate, DurationField] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _opening_types_only(self) -> Self:
        others = [t for t in self.event_type if t not in OPENING_EVENT_TYPES]
        if others:
            raise ValueError(
                f"severity is derived for release_failure and late_result events, not {others[0]}"
            )
        return self


DEFAULT_SEVERITY_RULES = (
    SeverityRule(
        name="late safety result (sterility, mycoplasma, endotoxin)",
        severity=Severity.CRITICAL,
        event_type=[EventType.LATE_RESULT],
        failed_attribute=["sterility", "mycoplasma", "endotoxin"],
    ),
    SeverityRule(
        name="late result after release",
        severity=Severity.CRITICAL,
        event_type=[EventType.LATE_RESULT],
    ),
    SeverityRule(
        name="lymphodepletion starts within 72 hours",
        severity=Severity.CRITICAL,
        key_date_within={KeyDate.LYMPHODEPLETION_START: parse_duration("72h")},
    ),
    SeverityRule(name="release failure", severity=Severity.MAJOR),
)
"""The rules used when neither the manufacturer nor the health system nor the site sets any."""


# --- health systems and sites ---------------------------------------------------------------


class Defaults(_Strict):
    ack_link_valid_for: DurationField | None = None
    notify_within: dict[Severity, DurationField] = Field(default_factory=dict)
    severity_rules: list[SeverityRule] | None = Field(default=None, min_length=1)


class _CenterSettings(_Strict):
    timezone: TimeZoneName | None = None
    on_call_phone: Phone | None = None
    """The center's round-the-clock number, named in the final escalation."""
    oos_pathway: Identifier | None = None
    """The regulatory path (``oos_pathways`` in manufacturer.yaml) for accepting an
    out-of-specification product here."""
    business_hours: BusinessHours | None = None
    holidays: HolidaysField | None = None
    contacts: list[Contact] = Field(default_factory=list)
    defaults: Defaults = Defaults()
    plans: dict[EventType, Identifier] = Field(default_factory=dict)
    manufacturer_contacts: dict[ManufacturerRole, Identifier] = Field(default_factory=dict)


class Site(_CenterSettings):
    id: Identifier
    name: Name


class HealthSystem(_CenterSettings):
    id: Identifier
    name: Name
    timezone: TimeZoneName
    sites: list[Site] = Field(min_length=1)


DEFAULT_ACK_LINK_VALID_FOR = parse_duration("14d")


class EffectiveAgreement(_Strict):
    """One site's agreement with its health system's defaults merged in: what planning reads."""

    center_id: str
    center_name: str
    health_system_id: str
    health_system_name: str
    timezone: str
    business_hours: BusinessHours
    holidays: Holidays
    contacts: list[Contact]
    system_contacts: list[Contact]
    manufacturer_name: str
    products: list[Product]
    manufacturer_contacts: dict[ManufacturerRole, list[ManufacturerContact]]
    ack_link_valid_for: DurationField
    notify_within: dict[Severity, DurationField]
    severity_rules: list[SeverityRule]
    plans: dict[EventType, Plan]
    on_call_phone: str | None = None
    oos_pathway: OosPathway | None = None
    """Absent from the agreements of incidents opened before pathways existed."""
    regulatory_clocks: list[RegulatoryClock] = Field(default_factory=list)
    """The manufacturer's clocks for every incident; absent from older agreements."""
    clinical_guidance: list[AttributeGuidance] = []
    """Absent from the agreements of incidents opened before guidance was configured."""

    @classmethod
    def stored(cls, snapshot: Any) -> EffectiveAgreement:
        """The agreement an incident was planned with, read back as it was stored: its names and
        addresses passed the checks of the day they were stored, and are not checked again."""
        center_id = snapshot.get("center_id") if isinstance(snapshot, dict) else None
        known = _STORED.get(center_id) if isinstance(center_id, str) else None
        if known is not None and known[0] == snapshot:
            return known[1]
        agreement = cls.model_validate(snapshot, context=STORED)
        if isinstance(center_id, str):
            # Every message and answer reads its incident's agreement back: the snapshots of a
            # site's incidents are mostly the same one, and validating it takes a millisecond.
            _STORED[center_id] = (copy.deepcopy(snapshot), agreement)
        return agreement

    def contacts_for(self, recipient: Recipient) -> list[Contact | ManufacturerContact]:
        """The people a step's recipient means here: site contacts first, else system-level ones."""
        if recipient.manufacturer:
            return list(self.manufacturer_contacts.get(ManufacturerRole(recipient.role), []))
        role = CenterRole(recipient.role)
        site = [c for c in self.contacts if role in c.roles]
        return list(site or [c for c in self.system_contacts if role in c.roles])

    def deciders(self, roles: Sequence[CenterRole]) -> list[Contact]:
        """The individuals asked to decide: contacts with one of ``roles`` marked ``decider``,
        the site's first, else the system's. Never anybody else: no fallback to coordinators."""
        site = [c for c in self.contacts if c.decider and set(roles) & set(c.roles)]
        return site or [c for c in self.system_contacts if c.decider and set(roles) & set(c.roles)]

    def contact(self, contact_id: str) -> Contact | None:
        return next(
            (c for c in [*self.contacts, *self.system_contacts] if c.id == contact_id), None
        )

    def product(self, code: str) -> Product | None:
        return next((p for p in self.products if p.code == code), None)

    def guidance(self, attribute: str) -> AttributeGuidance | None:
        """The clinical guidance for a failed attribute as an event names it, if configured."""
        name = _guidance_name(attribute)
        return next((g for g in self.clinical_guidance if name in g.names()), None)

    def snapshot(self) -> dict[str, Any]:
        """The agreement as an incident keeps it (JSON), dumped once per instance: every incident
        a site opens under the same agreements stores the same one. Shared: not to be changed."""
        known = _SNAPSHOTS.get(id(self))
        if known is not None and known[0] is self:
            return known[1]
        snapshot = self.model_dump(mode="json")
        if len(_SNAPSHOTS) >= _KEPT:
            _SNAPSHOTS.clear()
        _SNAPSHOTS[id(self)] = (self, snapshot)
        return snapshot

    def version(self) -> str:
        """A content hash: the same agreement always has the same version."""
        known = _VERSIONS.get(id(self))
        if known is not None and known[0] is self:
            return known[1]
        canonical = json.dumps(self.snapshot(), sort_keys=True, separators=(",", ":"))
        version = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        if len(_VERSIONS) >= _KEPT:
            _VERSIONS.clear()
        _VERSIONS[id(self)] = (self, version)
        return version


_KEPT = 4096
_STORED: dict[str, tuple[Any, EffectiveAgreement]] = {}
"""Each site's last agreement read back from an incident: the snapshot and what it gave."""
_VERSIONS: dict[int, tuple[EffectiveAgreement, str]] = {}
"""The versions of agreements in use (the instance is kept, so its id is not reused)."""
_SNAPSHOTS: dict[int, tuple[EffectiveAgreement, dict[str, Any]]] = {}
"""The snapshots of agreements in use (the instance is kept, so its id is not reused)."""


def _once_per_site(
    merge: Callable[[Agreements, str], EffectiveAgreement],
) -> Callable[[Agreements, str], EffectiveAgreement]:
    """A loaded config does not change: each site's agreement is merged once, and every event
    for the site gets the same (frozen) one, its version computed once."""

    def effective(self: Agreements, center_id: str) -> EffectiveAgreement:
        known = self.merged.get(center_id)
        if known is None:
            known = self.merged[center_id] = merge(self, center_id)
        return known

    effective.__doc__ = merge.__doc__
    return effective


# --- loading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """The config folder is invalid; ``problems`` lists each one with its file and field."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class _AgreementLoader(Composer, CParser, SafeConstructor, Resolver):
    """A safe loader for files written by hand, refusing what only an attack needs.

    No aliases (they make "billion laughs" bombs), no nesting deeper than agreements use (the
    composer recurses once per level), no more values than a large health system needs (building
    each costs time and memory), no key written twice, and a value the constructors cannot build
    (a 5000-digit number, 30 February) is a YAML error at its line rather than a crash.

    libyaml (``CParser``) reads the text into events, one at a time as the composer asks for
    them: in PyYAML's pure-Python parser that took a fifth of a start-up's CPU for a hundred
    sites, in C a sixth of that. The nodes are still composed here, in Python, so every check
    below sees each node before the next level is read (libyaml's own composer, that of
    ``yaml.CSafeLoader``, recurses through any depth unchecked).
    """

    def __init__(self, stream: str) -> None:
        self._text = stream
        if unprintable := Reader.NON_PRINTABLE.search(stream):
            # Refused as PyYAML's own reader words it (libyaml says "control characters")
            raise ReaderError(
                "<unicode string>",
                unprintable.start(),
                ord(unprintable.group()),
                "unicode",
                "special characters are not allowed",
            )
        CParser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._refuse("aliases (*name) are not allowed in agreement files")
        if self._depth >= MAX_CONFIG_DEPTH or self._nodes >= MAX_CONFIG_VALUES:
            self._refuse(
                f"nested deeper than {MAX_CONFIG_DEPTH} levels"
                if self._depth >= MAX_CONFIG_DEPTH
                else f"more than {MAX_CONFIG_VALUES} values in one file"
            )
        self._depth += 1
        self._nodes += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def load(self) -> Any:
        """The document, or a YAML error; the loader cannot be used again."""
        try:
            return self.get_single_data()
        except yaml.MarkedYAMLError as exc:
            if exc.problem == "exceeded maximum nesting depth":
                # libyaml's scanner looks ahead through a flow collection's opening brackets
                # and stops at its own limit (1,000) before the composer reaches level 33
                exc.context = None
                exc.problem = f"nested deeper than {MAX_CONFIG_DEPTH} levels"
            exc.context_mark = self._quoting(exc.context_mark)
            exc.problem_mark = self._quoting(exc.problem_mark)
            raise
        finally:
            self.dispose()

    def _quoting(self, mark: Any) -> Mark | None:
        """libyaml's mark as PyYAML's, which quotes the line it points at in the message."""
        if mark is None:
            return None
        text = self._text + "\0"
        return Mark(mark.name, mark.index, mark.line, mark.column, text, mark.index)

    def _refuse(self, problem: str) -> NoReturn:
        """A YAML error at the next event, the node about to be composed."""
        mark: Any = getattr(self.peek_event(), "start_mark", None)
        raise yaml.MarkedYAMLError(problem=problem, problem_mark=mark)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            value = node.value if isinstance(node.value, str) else node.tag
            shown = value if len(value) <= 40 else f"{value[:40]}…"
            raise yaml.MarkedYAMLError(
                problem=f"cannot read the value {shown!r}: {exc}",
                problem_mark=node.start_mark,
            ) from None

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key: the base class refuses it with its own message
            if repeated:
                raise yaml.MarkedYAMLError(
                    problem=f"the key {key!r} appears twice in one mapping",
                    problem_mark=key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def format_location(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as a field path: ``sites[0].contacts[2].email``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _read_yaml(path: Path, shown: str, problems: list[ConfigProblem]) -> Any:
    try:
        # Only a regular file, and never more of it than the limit: a link to /dev/zero or a
        # pipe would otherwise be read until memory runs out, or forever.
        if not stat.S_ISREG(path.stat().st_mode):
            problems.append(ConfigProblem(shown, "", "not a regular file"))
            return None
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_FILE_BYTES + 1)
        if len(raw) > MAX_CONFIG_FILE_BYTES:
            problems.append(ConfigProblem(shown, "", "file is larger than 1 MiB"))
            return None
        data = _AgreementLoader(raw.decode("utf-8")).load()
    except OSError as exc:
        problems.append(ConfigProblem(shown, "", f"cannot be read: {exc.strerror}"))
        return None
    except UnicodeDecodeError:
        problems.append(ConfigProblem(shown, "", "file is not UTF-8 text"))
        return None
    except yaml.YAMLError as exc:
        problems.append(ConfigProblem(shown, "", f"not valid YAML: {exc}"))
        return None
    if not isinstance(data, dict):
        problems.append(ConfigProblem(shown, "", "expected a mapping of fields at the top level"))
        return None
    return data


_M = TypeVar("_M", bound=BaseModel)


def _validate(model: type[_M], data: Any, shown: str, problems: list[ConfigProblem]) -> _M | None:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            message = error["msg"].removeprefix("Value error, ")
            problems.append(ConfigProblem(shown, format_location(error["loc"]), message))
        return None


@dataclass(frozen=True)
class Agreements:
    """Everything in ``config/``: the manufacturer, the health systems and sites, the plans."""

    manufacturer: Manufacturer
    health_systems: dict[str, HealthSystem]
    plans: dict[str, Plan]
    files: dict[str, str]
    """Which file each health system and plan came from, for messages."""
    version_id: int | None = None
    """The approved version of the agreements these are (``agreement_versions``); None when
    read from the files and not (yet) approved."""
    merged: dict[str, EffectiveAgreement] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """Each site's effective agreement, merged when first asked for."""

    def site(self, center_id: str) -> tuple[HealthSystem, Site] | None:
        for system in self.health_systems.values():
            for site in system.sites:
                if site.id == center_id:
                    return system, site
        return None

    def center_ids(self) -> list[str]:
        return [site.id for system in self.health_systems.values() for site in system.sites]

    def product(self, code: str) -> Product | None:
        return next((p for p in self.manufacturer.products if p.code == code), None)

    @_once_per_site
    def effective(self, center_id: str) -> EffectiveAgreement:
        """Merge a site with its health system; raises KeyError for an unknown center."""
        found = self.site(center_id)
        if found is None:
            raise KeyError(center_id)
        system, site = found
        pins = {**system.manufacturer_contacts, **site.manufacturer_contacts}
        manufacturer_contacts: dict[ManufacturerRole, list[ManufacturerContact]] = {}
        for role in ManufacturerRole:
            pinned = pins.get(role)
            manufacturer_contacts[role] = [
                c
                for c in self.manufacturer.contacts
                if role in c.roles and (pinned is None or c.id == pinned)
            ]
        plan_ids = {**system.plans, **site.plans}
        return EffectiveAgreement(
            center_id=site.id,
            center_name=site.name,
            health_system_id=system.id,
            health_system_name=system.name,
            timezone=site.timezone or system.timezone,
            business_hours=site.business_hours or system.business_hours or BusinessHours(),
            holidays=_merged_holidays(site.holidays, system.holidays),
            contacts=site.contacts,
            system_contacts=system.contacts,
            manufacturer_name=self.manufacturer.name,
            products=self.manufacturer.products,
            manufacturer_contacts=manufacturer_contacts,
            ack_link_valid_for=site.defaults.ack_link_valid_for
            or system.defaults.ack_link_valid_for
            or DEFAULT_ACK_LINK_VALID_FOR,
            notify_within={**system.defaults.notify_within, **site.defaults.notify_within},
            severity_rules=list(
                _first_set(
                    site.defaults.severity_rules,
                    system.defaults.severity_rules,
                    self.manufacturer.severity_rules,
                )
                or DEFAULT_SEVERITY_RULES
            ),
            plans={event_type: self.plans[plan_id] for event_type, plan_id in plan_ids.items()},
            on_call_phone=site.on_call_phone or system.on_call_phone,
            oos_pathway=self.manufacturer.pathway(site.oos_pathway or system.oos_pathway or ""),
            regulatory_clocks=self.manufacturer.regulatory_clocks,
            clinical_guidance=self.manufacturer.clinical_guidance,
        )


def _merged_holidays(site: Holidays | None, system: Holidays | None) -> Holidays:
    if site is not None and system is not None:
        return site.within(system)
    return site or system or Holidays()


def _first_set(*candidates: list[SeverityRule] | None) -> list[SeverityRule] | None:
    return next((c for c in candidates if c is not None), None)


def load_agreements(config_dir: Path) -> Agreements:
    """Load and cross-check ``config/``; raise ConfigError listing every problem found."""
    problems: list[ConfigProblem] = []
    if not config_dir.is_dir():
        raise ConfigError([ConfigProblem(str(config_dir), "", "config folder not found")])

    def shown(path: Path) -> str:
        return str(Path(config_dir.name) / path.relative_to(config_dir))

    manufacturer_path = config_dir / "manufacturer.yaml"
    manufacturer: Manufacturer | None = None
    if manufacturer_path.is_file():
        data = _read_yaml(manufacturer_path, shown(manufacturer_path), problems)
        if data is not None:
            manufacturer = _validate(Manufacturer, data, shown(manufacturer_path), problems)
    else:
        problems.append(ConfigProblem(shown(manufacturer_path), "", "file not found"))

    files: dict[str, str] = {}
    plans: dict[str, Plan] = {}
    invalid_plans: set[str] = set()
    for path in sorted((config_dir / "plans").glob("*.y*ml")):
        data = _read_yaml(path, shown(path), problems)
        plan = _validate(Plan, data, shown(path), problems) if data is not None else None
        if plan is None:
            if data is not None and isinstance(data.get("id"), str):
                invalid_plans.add(data["id"])  # reported in its own file, not where it is used
            continue
        if plan.id in plans:
            problems.append(
                ConfigProblem(shown(path), "id", f"plan {plan.id!r} is also in {files[plan.id]}")
            )
            continue
        plans[plan.id] = plan
        files[plan.id] = shown(path)

    systems: dict[str, HealthSystem] = {}
    system_paths = sorted((config_dir / "health_systems").glob("*.y*ml"))
    if not system_paths:
        problems.append(
            ConfigProblem(shown(config_dir / "health_systems"), "", "no health system file found")
        )
    for path in system_paths:
        data = _read_yaml(path, shown(path), problems)
        system = _validate(HealthSystem, data, shown(path), problems) if data is not None else None
        if system is None:
            continue
        if system.id in systems:
            problems.append(
                ConfigProblem(
                    shown(path), "id", f"health system {system.id!r} is also in {files[system.id]}"
                )
            )
            continue
        systems[system.id] = system
        files[system.id] = shown(path)

    if manufacturer is not None:
        problems.extend(_cross_check(manufacturer, systems, plans, files, invalid_plans))
    if problems or manufacturer is None:
        raise ConfigError(problems)
    return Agreements(manufacturer=manufacturer, health_systems=systems, plans=plans, files=files)


def _cross_check(
    manufacturer: Manufacturer,
    systems: dict[str, HealthSystem],
    plans: dict[str, Plan],
    files: dict[str, str],
    invalid_plans: set[str],
) -> list[ConfigProblem]:
    """Checks that span files: references resolve and every step reaches somebody (a plan
    whose own file is invalid is not reported again where it is used)."""
    problems: list[ConfigProblem] = []
    seen_sites: dict[str, str] = {}
    for system in systems.values():
        file = files[system.id]
        ids = [c.id for c in system.contacts] + [c.id for s in system.sites for c in s.contacts]
        for duplicate in sorted({i for i in ids if ids.count(i) > 1}):
            problems.append(
                ConfigProblem(file, "contacts", f"contact id {duplicate!r} is repeated")
            )
        known_plans = set(plans) | invalid_plans
        problems.extend(_reference_problems(file, "", system, manufacturer, known_plans))
        for index, site in enumerate(system.sites):
            where = f"sites[{index}]"
            if site.id in seen_sites:
                problems.append(
                    ConfigProblem(
                        file, f"{where}.id", f"site {site.id!r} is also in {seen_sites[site.id]}"
                    )
                )
            seen_sites[site.id] = file
            problems.extend(
                _check_site(file, where, manufacturer, system, site, plans, known_plans)
            )
    return problems


def _reference_problems(
    file: str,
    prefix: str,
    settings: _CenterSettings,
    manufacturer: Manufacturer,
    plan_ids: set[str],
) -> list[ConfigProblem]:
    """A health system's or site's pins and plans must name what exists, with the right role."""
    problems: list[ConfigProblem] = []
    holders = {c.id: c for c in manufacturer.contacts}
    for role, contact_id in settings.manufacturer_contacts.items():
        field = f"{prefix}manufacturer_contacts.{role}"
        if contact_id not in holders:
            message = f"no manufacturer contact {contact_id!r} in manufacturer.yaml"
            problems.append(ConfigProblem(file, field, message))
        elif role not in holders[contact_id].roles:
            message = f"manufacturer contact {contact_id!r} does not have the role {role}"
            problems.append(ConfigProblem(file, field, message))
    for event_type, plan_id in settings.plans.items():
        if plan_id not in plan_ids:
            message = f"no plan {plan_id!r} in plans/"
            problems.append(ConfigProblem(file, f"{prefix}plans.{event_type}", message))
    if settings.oos_pathway is not None and manufacturer.pathway(settings.oos_pathway) is None:
        known = ", ".join(p.id for p in manufacturer.oos_pathways) or "none"
        message = f"no oos pathway {settings.oos_pathway!r} in manufacturer.yaml; known: {known}"
        problems.append(ConfigProblem(file, f"{prefix}oos_pathway", message))
    return problems


def _check_site(
    file: str,
    where: str,
    manufacturer: Manufacturer,
    system: HealthSystem,
    site: Site,
    plans: dict[str, Plan],
    known_plans: set[str],
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    problems.extend(_reference_problems(file, f"{where}.", site, manufacturer, known_plans))
    plan_ids = {**system.plans, **site.plans}
    for event_type in (EventType.RELEASE_FAILURE, EventType.LATE_RESULT):
        if event_type not in plan_ids:
            problems.append(
                ConfigProblem(
                    file,
                    f"{where}.plans",
                    f"site {site.id!r} has no plan for {event_type} (set it here or on the system)",
                )
            )
    if problems:
        return problems
    pins = {**system.manufacturer_contacts, **site.manufacturer_contacts}
    center_roles = {r for c in [*site.contacts, *system.contacts] for r in c.roles}
    for event_type, plan_id in plan_ids.items():
        plan = plans.get(plan_id)
        if plan is None:  # reported where it is referenced, or the plan file itself is invalid
            continue
        field = f"{where}.plans.{event_type}"
        problems.extend(_clinical_problems(file, field, where, event_type, plan, system, site))
        problems.extend(_call_rule_problems(file, field, manufacturer, plan, center_roles, pins))
        recipients = [r for s in plan.steps for r in s.notify]
        recipients += [r for s in plan.patient_communication for r in s.notify]
        if plan.decision is not None:
            recipients += [*plan.decision.inform, *plan.decision.escalate]
            if "outcome_to" in plan.decision.model_fields_set:
                # The default names the four roles a center usually has; one it lacks is
                # skipped on the timeline. A list written by hand must reach somebody.
                recipients += plan.decision.outcome_to
        for recipient in dict.fromkeys(recipients):
            if not recipient.manufacturer:
                if recipient.role not in center_roles:
                    problems.append(
                        ConfigProblem(
                            file,
                            field,
                            f"plan {plan_id!r} notifies {recipient} but no contact of site "
                            f"{site.id!r} or of {system.id!r} has that role",
                        )
                    )
                continue
            holders = [c for c in manufacturer.contacts if recipient.role in c.roles]
            if not holders:
                problems.append(
                    ConfigProblem(
                        file,
                        field,
                        f"plan {plan_id!r} notifies {recipient} but no manufacturer contact "
                        "has that role",
                    )
                )
            elif len(holders) > 1 and recipient.role not in pins:
                names = ", ".join(c.id for c in holders)
                problems.append(
                    ConfigProblem(
                        file,
                        f"{where}.manufacturer_contacts",
                        f"plan {plan_id!r} notifies {recipient}, which {len(holders)} manufacturer "
                        f"contacts have ({names}): pin one with "
                        f"manufacturer_contacts: {{{recipient.role}: <id>}}",
                    )
                )
    return list(dict.fromkeys(problems))  # a site's missing pathway matters once, not per plan


def _call_rule_problems(
    file: str,
    field: str,
    manufacturer: Manufacturer,
    plan: Plan,
    center_roles: set[CenterRole],
    pins: dict[ManufacturerRole, str],
) -> list[ConfigProblem]:
    """A call rule must name roles somebody holds: a call task for nobody is never made, and
    its escalation would reach nobody either."""
    problems: list[ConfigProblem] = []
    for rule in plan.calls:
        for recipient in (rule.call, *rule.escalate):
            if recipient.manufacturer:
                role = ManufacturerRole(recipient.role)
                holders = [c for c in manufacturer.contacts if role in c.roles]
                held = bool(holders) and (
                    role not in pins or any(c.id == pins[role] for c in holders)
                )
            else:
                held = recipient.role in center_roles
            if not held:
                where = "the manufacturer's contacts" if recipient.manufacturer else "the center"
                problems.append(
                    ConfigProblem(
                        file,
                        field,
                        f"plan {plan.id!r} call rule {rule.name!r} names {recipient} but nobody "
                        f"in {where} has that role",
                    )
                )
    return problems


LATE_RESULT_TEMPLATE = "late_result_initial"
PRE_RELEASE_TEMPLATE = "release_failure_initial"


def _clinical_problems(
    file: str,
    field: str,
    where: str,
    event_type: EventType,
    plan: Plan,
    system: HealthSystem,
    site: Site,
) -> list[ConfigProblem]:
    """What would make a plan tell a clinician something wrong, or leave a decision to nobody."""
    problems: list[ConfigProblem] = []
    if event_type is EventType.LATE_RESULT and any(
        s.template == PRE_RELEASE_TEMPLATE for s in plan.steps
    ):
        problems.append(
            ConfigProblem(
                file,
                field,
                f"plan {plan.id!r} handles late results but sends {PRE_RELEASE_TEMPLATE}, which "
                "tells the center to hold lymphodepletion even after infusion: use "
                f"{LATE_RESULT_TEMPLATE}",
            )
        )
    if plan.decision is None:
        return problems
    contacts = [*site.contacts, *system.contacts]
    asked = set(plan.decision.ask)
    if not any(c.decider and asked & set(c.roles) for c in contacts):
        roles = " or ".join(plan.decision.ask)
        problems.append(
            ConfigProblem(
                file,
                field,
                f"plan {plan.id!r} asks a {roles} to decide on an out-of-specification product "
                f"but no {roles} of site {site.id!r} or of {system.id!r} is marked decider: true "
                "(an individual, not a shared mailbox)",
            )
        )
    if (site.oos_pathway or system.oos_pathway) is None:
        problems.append(
            ConfigProblem(
                file,
                f"{where}.oos_pathway",
                f"site {site.id!r} has plans that ask for decisions on out-of-specification "
                "products but no oos_pathway (set it here or on the system)",
            )
        )
    return problems


__all__ = [
    "Agreements",
    "AttributeGuidance",
    "BusinessHours",
    "CallRule",
    "ConfigError",
    "ConfigProblem",
    "Contact",
    "DecisionRule",
    "Duration",
    "EffectiveAgreement",
    "HealthSystem",
    "Holidays",
    "IndicationWindow",
    "InfusionWindow",
    "Manufacturer",
    "ManufacturerContact",
    "OosPathway",
    "PatientStep",
    "PhysicianStep",
    "Plan",
    "Recipient",
    "RegulatoryClock",
    "SeverityRule",
    "Site",
    "Step",
    "load_agreements",
]
