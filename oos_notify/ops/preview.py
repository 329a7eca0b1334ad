"""``oos-notify preview``: a message exactly as a center would receive it, for onboarding.

The center's own template overrides apply, and the facts come from a sample incident or from an
event file in the API's format, so a coordinator can read the real wording before go-live.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from oos_notify.agreements import business_time
from oos_notify.agreements.business_time import CenterCalendar
from oos_notify.agreements.config import (
    LATE_RESULT_TEMPLATE,
    Agreements,
    ConfigProblem,
    EffectiveAgreement,
    Plan,
    format_location,
)
from oos_notify.agreements.vocabulary import OPENING_EVENT_TYPES, Disposition, EventType
from oos_notify.delivery.messaging import center_ids, incident_view
from oos_notify.delivery.rendering import (
    MessageContext,
    PersonView,
    RenderedMessage,
    Renderer,
    local_time,
)
from oos_notify.incidents.acknowledgement import CALLBACK_TEMPLATE
from oos_notify.incidents.decisions import DECISION_RECORDED_TEMPLATE
from oos_notify.incidents.deputies import DECIDER_ABSENT_TEMPLATE
from oos_notify.incidents.events import EventIn
from oos_notify.incidents.outcome import DECISION_OUTCOME_TEMPLATE
from oos_notify.incidents.planning import (
    DECISION_OVERDUE_TEMPLATE,
    DECISION_REMINDER_TEMPLATE,
    DECISION_TEMPLATE,
    FOLLOW_UP_TEMPLATES,
    derive_severity,
)
from oos_notify.ops.config_check import SAMPLE_INSTANT, sample_context
from oos_notify.store.models import Incident

MAX_EVENT_FILE_BYTES = 64 * 1024


class PreviewError(Exception):
    """What stops a preview, said in terms of the command's arguments."""


def preview(
    agreements: Agreements,
    renderer: Renderer,
    center_id: str,
    template: str,
    event_file: Path | None,
    now: datetime,
    replies_confirm: bool = False,
) -> RenderedMessage:
    if center_id not in agreements.center_ids():
        known = ", ".join(agreements.center_ids())
        raise PreviewError(f"--center: no site {center_id!r}; known: {known}")
    agreement = agreements.effective(center_id)
    chain = center_ids(agreement)
    if not renderer.exists(template, chain):
        raise PreviewError(
            f"--template: no template {template!r} for {center_id} (a folder in "
            f"{renderer.templates_dir} with subject.txt, body.txt and body.html)"
        )
    asks_decision = template in (
        DECISION_TEMPLATE,
        DECISION_OVERDUE_TEMPLATE,
        DECISION_REMINDER_TEMPLATE,
    )
    offered = asks_decision or template in (
        CALLBACK_TEMPLATE,
        DECISION_RECORDED_TEMPLATE,
        DECISION_OUTCOME_TEMPLATE,
        DECIDER_ABSENT_TEMPLATE,
    )
    disposition = Disposition.OOS_RELEASE_OFFERED if offered else Disposition.UNDER_INVESTIGATION
    late = template in LATE_RESULT_TEMPLATES
    context = sample_context(
        agreement, disposition=disposition, asks_decision=asks_decision, late_result=late
    )
    opened = SAMPLE_INSTANT
    if event_file is not None:
        event = _read_event(event_file, center_id)
        context = _with_event(context, event, agreement, now)
        opened = now
    plan = agreement.plans[EventType.LATE_RESULT if late else EventType.RELEASE_FAILURE]
    return renderer.render(
        template, _as_step(context, agreement, plan, template, opened, replies_confirm), chain
    )


def _as_step(
    context: MessageContext,
    agreement: EffectiveAgreement,
    plan: Plan,
    template: str,
    opened: datetime,
    replies_confirm: bool,
) -> MessageContext:
    """The sample as ``plan`` sends ``template``: a deadline to confirm by only where a later
    escalation step follows it (when that step is due after the opening), and the sentence that
    a reply confirms only on an escalation step, and only where this service reads replies."""
    escalates_at = None
    in_plan = False
    for step, following in zip(plan.steps, [*plan.steps[1:], None], strict=True):
        if step.template != template:
            continue
        in_plan = True
        if following is not None and following.after is not None:
            due = business_time.add(
                opened,
                following.after,
                CenterCalendar.of(agreement),
                following.business_hours,
            )
            escalates_at = local_time(due, agreement.timezone)
    return context.model_copy(
        update={
            "escalates_at": escalates_at if context.ack else None,
            "replies_confirm": replies_confirm and in_plan and context.ack is not None,
        }
    )


def _read_event(path: Path, center_id: str) -> EventIn:
    try:
        if path.stat().st_size > MAX_EVENT_FILE_BYTES:
            raise PreviewError(f"--event: {path} is larger than 64 KiB")
        event = EventIn.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PreviewError(f"--event: cannot read {path}: {exc}") from None
    except ValidationError as exc:
        problems = [
            ConfigProblem(str(path), format_location(e["loc"]), e["msg"])
            for e in exc.errors(include_url=False)
        ]
        raise PreviewError("--event: " + "; ".join(str(p) for p in problems)) from None
    if event.center_id != center_id:
        raise PreviewError(f"--event: the event is for {event.center_id!r}, not {center_id!r}")
    return event


LATE_RESULT_TEMPLATES = frozenset(
    {LATE_RESULT_TEMPLATE, FOLLOW_UP_TEMPLATES[EventType.LATE_RESULT]}
)


def _with_event(
    sample: MessageContext, event: EventIn, agreement: EffectiveAgreement, now: datetime
) -> MessageContext:
    """The sample context with the incident the event describes (as if it opened now), with
    the severity the live service would give it: the event's own, else the agreement's rules'."""
    calendar = CenterCalendar.of(agreement)
    opening = event.type if event.type in OPENING_EVENT_TYPES else EventType.RELEASE_FAILURE
    severity, rule = (
        (event.severity, None)
        if event.severity is not None
        else derive_severity(
            agreement.severity_rules,
            opening,
            (a.attribute for a in event.failed_attributes),
            event.key_dates,
            calendar,
            now,
        )
    )
    incident = Incident(
        id="inc_PREVIEW",
        incident_ref=event.incident_ref,
        center_id=event.center_id,
        product_code=event.product_code or sample.incident.product_code,
        lot_number=event.lot_number or sample.incident.lot_number,
        chain_of_identity=event.chain_of_identity or sample.incident.chain_of_identity,
        opening_type=opening,
        plan_type=opening,
        severity=severity,
        severity_rule=rule,
        status="notifying",
        disposition=event.disposition or sample.incident.disposition,
        failed_attributes=[a.model_dump(mode="json") for a in event.failed_attributes],
        key_dates={k.value: v.isoformat() for k, v in event.key_dates.items()},
        summary=event.summary,
        product_status=event.product_status,
        infused_at=event.infused_at,
        indication=event.indication,
        remanufacture=event.remanufacture.model_dump(mode="json", exclude_none=True)
        if event.remanufacture
        else None,
        within_spec_basis=event.within_spec_basis.model_dump(mode="json")
        if event.within_spec_basis
        else None,
        agreement_version=agreement.version(),
        agreement={},
        opened_at=now,
        updated_at=now,
    )
    qa = event.qa_contact
    expires_at = business_time.add(now, agreement.ack_link_valid_for, calendar, False)
    view = incident_view(incident, agreement, now)
    return sample.model_copy(
        update={
            "incident": view.model_copy(update={"oos_release": sample.incident.oos_release}),
            "ack": sample.ack.model_copy(
                update={"expires_at": local_time(expires_at, agreement.timezone)}
            )
            if sample.ack
            else None,
            "qa_contact": PersonView(name=qa.name, email=qa.email, phone=qa.phone)
            if qa
            else sample.qa_contact,
        }
    )
