"""``check-config``: agreements and templates checked together, each problem with its place."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

from oos_notify.agreements.business_time import CenterCalendar
from oos_notify.agreements.business_time import add as add_duration
from oos_notify.agreements.config import (
    Agreements,
    ConfigError,
    ConfigProblem,
    Contact,
    EffectiveAgreement,
    ManufacturerContact,
    OosPathway,
    load_agreements,
)
from oos_notify.agreements.vocabulary import (
    AckResponse,
    CenterRole,
    Disposition,
    EventType,
    ProductStatus,
)
from oos_notify.delivery.clinical import IN_A_SHIPPER, clinical_facts
from oos_notify.delivery.messaging import center_ids, center_view
from oos_notify.delivery.rendering import (
    SUBJECT_LIMIT,
    AckLinkView,
    AcknowledgementView,
    CallTaskView,
    CenterReportView,
    ChecklistItemView,
    FailedAttributeView,
    FailedDeliveryView,
    ForwardedReplyView,
    IncidentView,
    MessageContext,
    OosReleaseView,
    PersonView,
    RegulatoryClockView,
    RemanufactureView,
    Renderer,
    RenderError,
    RevisionView,
    SignatureView,
    WithinSpecBasisView,
    disposition_label,
    key_date_views,
    local_time,
)
from oos_notify.inbound.handling import FORWARDED_REPLY_TEMPLATE
from oos_notify.incidents import regulatory_clocks
from oos_notify.incidents.acknowledgement import (
    CALLBACK_TEMPLATE,
    DECISION_RECEIPT_TEMPLATE,
    RECEIPT_TEMPLATE,
)
from oos_notify.incidents.call_tasks import (
    CALL_TASK_OVERDUE_TEMPLATE,
    CALL_TASK_TEMPLATE,
    numbers_to_call,
)
from oos_notify.incidents.center_reports import REPORT_TEMPLATE, ReportKind
from oos_notify.incidents.decisions import DECISION_RECORDED_TEMPLATE
from oos_notify.incidents.deputies import DECIDER_ABSENT_TEMPLATE
from oos_notify.incidents.outcome import DECISION_OUTCOME_TEMPLATE
from oos_notify.incidents.planning import (
    DECISION_OVERDUE_TEMPLATE,
    DECISION_REMINDER_TEMPLATE,
    DECISION_TEMPLATE,
    DELIVERY_FAILURE_TEMPLATE,
    FOLLOW_UP_TEMPLATES,
)
from oos_notify.store import signatures

SAMPLE_INSTANT = datetime(2026, 11, 24, 15, 12, tzinfo=UTC)
BUILT_IN_TEMPLATES = frozenset(
    {
        RECEIPT_TEMPLATE,
        DECISION_RECEIPT_TEMPLATE,
        DECISION_TEMPLATE,
        DECISION_OVERDUE_TEMPLATE,
        DECISION_REMINDER_TEMPLATE,
        DECISION_RECORDED_TEMPLATE,
        DECISION_OUTCOME_TEMPLATE,
        DECIDER_ABSENT_TEMPLATE,
        CALLBACK_TEMPLATE,
        DELIVERY_FAILURE_TEMPLATE,
        FORWARDED_REPLY_TEMPLATE,
        CALL_TASK_TEMPLATE,
        CALL_TASK_OVERDUE_TEMPLATE,
        regulatory_clocks.REMINDER_TEMPLATE,
        regulatory_clocks.MISSED_TEMPLATE,
        REPORT_TEMPLATE,
        *FOLLOW_UP_TEMPLATES.values(),
    }
)
"""Messages the service sends on its own, whatever the plans say."""


def sample_context(
    agreement: EffectiveAgreement,
    with_ack_link: bool = True,
    disposition: Disposition = Disposition.UNDER_INVESTIGATION,
    asks_decision: bool = False,
    product_status: ProductStatus | None = None,
    late_result: bool = False,
    lymphodepletion_started: bool = False,
    indication_known: bool = True,
) -> MessageContext:
    """A realistic context for a center, to check and preview templates without an incident:
    every fact a template can show is there, so every branch of it renders. The sample's
    lymphodepletion starts on Mon 30 Nov 2026; ``lymphodepletion_started`` reads it a day
    later."""
    product = agreement.products[0]
    contact = (agreement.contacts or agreement.system_contacts)[0]
    decider = next(iter(agreement.deciders([CenterRole.PHYSICIAN])), contact)
    signed_at = local_time(SAMPLE_INSTANT, agreement.timezone)
    answer = AcknowledgementView(
        by=f"{contact.name} <{contact.email}>",
        role=str(contact.roles[0]),
        at=signed_at,
        response=AckResponse.RECEIVED.label,
        answer=AckResponse.RECEIVED.value,
        comment="Physician informed.",
    )
    decided = disposition is Disposition.OOS_RELEASE_OFFERED and not asks_decision
    pathway = agreement.oos_pathway
    offered = disposition is Disposition.OOS_RELEASE_OFFERED
    key_dates = {
        "lymphodepletion_start": "2026-11-30",
        "lymphodepletion_end": "2026-12-02",
        "planned_infusion": "2026-12-04",
    }
    if product_status in IN_A_SHIPPER:
        key_dates["product_shipment"] = "2026-11-23"
    infused = product_status is ProductStatus.INFUSED
    attribute = "sterility" if late_result else "viability"
    facts = clinical_facts(
        agreement,
        product,
        product_status,
        next(iter(product.indications()), None) if indication_known else None,
        key_dates,
        [attribute],
        date(2026, 12, 1) if lymphodepletion_started else SAMPLE_INSTANT.date(),
    )
    calendar = CenterCalendar.of(agreement)
    expires_at = add_duration(SAMPLE_INSTANT, agreement.ack_link_valid_for, calendar, False)
    return MessageContext(
        incident=IncidentView(
            id="inc_SAMPLE",
            ref="OOS-SAMPLE-0001",
            status="notifying",
            severity="critical" if late_result else "major",
            severity_rule="late safety result (sterility, mycoplasma, endotoxin)"
            if late_result
            else "release failure",
            disposition=disposition,
            disposition_label=disposition_label(disposition),
            product_code=product.code,
            product_name=product.name,
            lot_number="LOT-SAMPLE-01",
            chain_of_identity="COI-SAMPLE-0001",
            summary="Final product viability below specification. Investigation opened.",
            failed_attributes=[
                FailedAttributeView(
                    attribute=attribute,
                    specification="no growth" if late_result else ">= 80 %",
                    result="growth at day 9" if late_result else "71 %",
                    method="BacT/ALERT" if late_result else "flow cytometry 7-AAD",
                )
            ],
            key_dates=key_date_views(key_dates),
            opened_at=signed_at,
            product_status=product_status.value if product_status else None,
            product_status_label=product_status.label if product_status else None,
            infused=infused,
            infused_at=signed_at if infused else None,
            late_result=late_result,
            microbial=late_result,
            infusion_window=facts.infusion_window,
            infusion_windows=facts.infusion_windows,
            lymphodepletion_started=facts.lymphodepletion_started,
            shipper_hold=facts.shipper_hold,
            guidance=facts.guidance,
            unguided=facts.unguided,
            oos_release=OosReleaseView(
                pathway=pathway.name if pathway else "Sample pathway",
                checklist=[
                    ChecklistItemView(
                        label=item.label,
                        reference=None if index else "RA-SAMPLE-01",
                        confirmed_at=None if index else signed_at,
                    )
                    for index, item in enumerate(pathway.checklist if pathway else [])
                ],
                outstanding=max(len(pathway.checklist) - 1, 0) if pathway else 0,
                requests_supply=bool(pathway and pathway.physician_requests_supply),
                # A decision asked for before what the pathway puts first is on file.
                awaiting=[
                    item.label
                    for item in (pathway.checklist if pathway else [])
                    if asks_decision and item.id in pathway_requires(pathway)
                ],
                asked=[
                    PersonView(
                        name=decider.name,
                        email=decider.email,
                        phone=decider.phone,
                        role="physician",
                    )
                ],
            )
            if offered
            else None,
            remanufacture=RemanufactureView(
                new_apheresis_needed=False,
                expected_release="Mon 14 Dec 2026",
                bridging_therapy_needed=None,
            )
            if disposition is Disposition.REMANUFACTURE
            else None,
            within_spec_basis=WithinSpecBasisView(
                assignable_cause="Sample mix-up at the testing laboratory, confirmed by re-test",
                certificate_of_analysis="COA-SAMPLE-01-R1",
            )
            if disposition is Disposition.RELEASED_WITHIN_SPEC
            else None,
            decision_due=signed_at if offered else None,
        ),
        center=center_view(agreement, EventType.LATE_RESULT if late_result else "release_failure"),
        recipient=PersonView(
            name=contact.name, email=contact.email, phone=contact.phone, role=str(contact.roles[0])
        ),
        manufacturer=agreement.manufacturer_name,
        qa_contact=PersonView(
            name="QA Release Desk", email="qa@manufacturer.example", phone="+1 555 0100"
        ),
        step_level=0,
        ack=AckLinkView(
            url="http://127.0.0.1:8000/ack/SAMPLE-TOKEN",
            expires_at=local_time(expires_at, agreement.timezone),
        )
        if with_ack_link
        else None,
        asks_decision=asks_decision,
        escalates_at=None
        if asks_decision
        else local_time(SAMPLE_INSTANT + timedelta(hours=2), agreement.timezone),
        replies_confirm=with_ack_link and not asks_decision,
        acknowledgement=answer,
        decision=answer.model_copy(
            update={
                "by": f"{decider.name} <{decider.email}>",
                "response": AckResponse.ACCEPT_OOS_PRODUCT.label,
                "answer": AckResponse.ACCEPT_OOS_PRODUCT.value,
                "signature": SignatureView(
                    printed_name=decider.name,
                    meaning=AckResponse.ACCEPT_OOS_PRODUCT.meaning,
                    signed_at=signed_at,
                    method=signatures.METHOD_LABELS["passkey"],
                ),
                "revision": RevisionView(
                    reason="Decision given by telephone after the callback.",
                    recorded_by="QA Release Desk <qa@manufacturer.example>",
                ),
            }
        )
        if decided
        else None,
        confirmations=[answer],
        callback=answer.model_copy(
            update={
                "response": AckResponse.CALL_ME.label,
                "answer": AckResponse.CALL_ME.value,
                "phone": decider.phone,
            }
        )
        if offered
        else None,
        failed_delivery=FailedDeliveryView(
            recipient=PersonView(
                name=contact.name, email=contact.email, role=str(contact.roles[0])
            ),
            template="release_failure_initial",
            failed_at=signed_at,
            attempts=1,
            smtp_code=550,
            reply="5.1.1 <" + contact.email + ">: mailbox unavailable",
        ),
        forwarded_reply=ForwardedReplyView(
            sender=PersonView(name=contact.name, email=contact.email, role=str(contact.roles[0])),
            received_at=local_time(SAMPLE_INSTANT, agreement.timezone),
            subject="Re: [OOS] Release failure",
            text="Who do we call about moving the infusion date?",
            reason="it does not confirm",
            request="a call back, but the time to call cannot be read for sure",
        ),
        center_report=CenterReportView(
            by=PersonView(name=contact.name, email=contact.email, role=str(contact.roles[0])),
            kind=ReportKind.LYMPHODEPLETION_POSTPONED.value,
            label=ReportKind.LYMPHODEPLETION_POSTPONED.label,
            day=local_time(SAMPLE_INSTANT, agreement.timezone),
            source="link",
            at=local_time(SAMPLE_INSTANT, agreement.timezone),
        ),
        call_task=CallTaskView(
            id="call_SAMPLE",
            reason="the incident is critical",
            caller_role="manufacturer:medical_affairs",
            numbers=[
                PersonView(name=n["name"], phone=n["phone"], role=n["role"])
                for n in numbers_to_call(agreement, [CenterRole.PHYSICIAN, CenterRole.COORDINATOR])
            ],
            opened_at=signed_at,
            due_at=local_time(SAMPLE_INSTANT + timedelta(hours=1), agreement.timezone),
            api_path="/v1/call-tasks/call_SAMPLE/close",
        ),
        regulatory_clock=RegulatoryClockView(
            label="Notification of the competent authority",
            source="EU GMP Part IV, 11.5",
            started_by="the infusion of the product",
            started_at=signed_at,
            due_at=local_time(SAMPLE_INSTANT + timedelta(hours=48), agreement.timezone),
            missed=False,
        ),
    )


def pathway_requires(pathway: OosPathway | None) -> list[str]:
    """The items a sample's pathway puts before the decision."""
    return pathway.decision_requires if pathway else []


BEFORE_INFUSION = (ProductStatus.IN_MANUFACTURING, ProductStatus.SHIPPED, ProductStatus.AT_CENTER)


def sample_contexts(agreement: EffectiveAgreement) -> list[MessageContext]:
    """One sample per disposition, one asking for a decision, a late result after and before
    infusion and with the product's state unknown, a release failure and a cancellation in each
    state before infusion with lymphodepletion started or not, one without the patient's
    indication, and one reporting a message that could not be built and one that bounced: every
    branch a template has for them is rendered by ``check-config``, not first at 3 a.m."""
    samples = [
        *(sample_context(agreement, disposition=d) for d in Disposition),
        sample_context(agreement, disposition=Disposition.OOS_RELEASE_OFFERED, asks_decision=True),
        *(
            sample_context(agreement, product_status=status, late_result=True)
            for status in (ProductStatus.INFUSED, ProductStatus.AT_CENTER, None)
        ),
        *(
            sample_context(
                agreement,
                disposition=disposition,
                product_status=status,
                lymphodepletion_started=started,
            )
            for disposition in (Disposition.UNDER_INVESTIGATION, Disposition.CANCELLED)
            for status in BEFORE_INFUSION
            for started in (False, True)
        ),
        sample_context(agreement, product_status=ProductStatus.SHIPPED, late_result=True),
        sample_context(agreement, indication_known=False),
    ]
    refused = samples[0].failed_delivery
    assert refused is not None
    never_sent = refused.model_copy(
        update={
            "never_sent": True,
            "smtp_code": None,
            "reply": "cannot build the message: a To header cannot contain a line break",
        }
    )
    bounced = refused.model_copy(
        update={"bounced": True, "brought_forward": [refused.recipient, refused.recipient]}
    )
    report = samples[0].center_report
    assert report is not None
    asks_call = report.model_copy(
        update={
            "kind": ReportKind.CALL_ME.value,
            "label": ReportKind.CALL_ME.label,
            "day": None,
            "phone": "+1 555 0100",
            "call_window": "14:00-16:00",
            "comment": "Before the ward round, please.",
        }
    )
    return [
        *samples,
        samples[0].model_copy(update={"failed_delivery": never_sent}),
        samples[0].model_copy(update={"failed_delivery": bounced}),
        samples[0].model_copy(update={"center_report": asks_call}),
    ]


def subject_problems(
    subject: str, context: MessageContext, agreement: EffectiveAgreement
) -> list[str]:
    """What is wrong with a subject as a sample incident renders it: longer than a phone shows,
    or naming the patient's chain of identity, a person or an address. Subjects land in mail
    gateways' logs and on lock screens; the body is where those belong."""
    problems = []
    if len(subject) > SUBJECT_LIMIT:
        problems.append(
            f"the subject is {len(subject)} characters for the sample incident, over "
            f"{SUBJECT_LIMIT}: {subject!r}"
        )
    if context.incident.chain_of_identity in subject:
        problems.append("the subject shows the chain-of-identity code (it identifies the patient)")
    people: list[Contact | ManufacturerContact] = [
        *agreement.contacts,
        *agreement.system_contacts,
        *(c for staff in agreement.manufacturer_contacts.values() for c in staff),
    ]
    shown = [
        *((p.name, "a contact's name") for p in people),
        *((p.email, "a contact's address") for p in people),
        *(
            (value, what)
            for person in (context.recipient, context.qa_contact)
            if person is not None
            for value, what in ((person.name, "a contact's name"), (person.email, "an address"))
            if value
        ),
    ]
    folded = subject.casefold()
    for value, what in shown:
        if value.casefold() in folded:
            problems.append(f"the subject shows {what}, {value!r}")
            break
    return problems


def _template_problems(agreements: Agreements, renderer: Renderer) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    known_ids = set(agreements.health_systems) | set(agreements.center_ids())
    overrides = renderer.templates_dir / "centers"
    if overrides.is_dir():
        for folder in sorted(p for p in overrides.iterdir() if p.is_dir()):
            if folder.name not in known_ids:
                problems.append(
                    ConfigProblem(str(folder), "", "no site or health system has this id")
                )
    for center_id in agreements.center_ids():
        agreement = agreements.effective(center_id)
        chain = center_ids(agreement)
        contexts = sample_contexts(agreement)
        names = set(BUILT_IN_TEMPLATES)
        for plan in agreement.plans.values():
            names |= {s.template for s in plan.steps}
            names |= {s.template for s in plan.patient_communication}
            names |= {s.template for s in plan.treating_physician or []}
        for name in sorted(names):
            if not renderer.exists(name, chain):
                problems.append(
                    ConfigProblem(
                        str(renderer.templates_dir / name),
                        "",
                        f"template {name!r} (used for {center_id}) needs subject.txt, body.txt "
                        "and body.html",
                    )
                )
                continue
            try:
                for context in contexts:
                    subject = renderer.render(name, context, chain).subject
                    wrong = subject_problems(subject, context, agreement)
                    if wrong:
                        file = renderer.source_of(f"{name}/subject.txt", chain)
                        problems.append(ConfigProblem(file, "", f"{wrong[0]} (for {center_id})"))
                        break
            except RenderError as exc:
                problems.append(ConfigProblem(exc.file, "", f"{exc.message} (for {center_id})"))
    return problems


def load(config_dir: Path, templates_dir: Path) -> tuple[Agreements, Renderer]:
    """Validated agreements and a renderer for the templates folder, or ConfigError; the
    templates are not rendered yet (``check_templates``)."""
    agreements = load_agreements(config_dir)
    if not templates_dir.is_dir():
        raise ConfigError([ConfigProblem(str(templates_dir), "", "templates folder not found")])
    return agreements, Renderer(templates_dir)


def check_templates(agreements: Agreements, renderer: Renderer) -> None:
    """Render every template every center can be sent with its sample contexts; ConfigError
    naming each one that fails."""
    problems = _template_problems(agreements, renderer)
    if problems:
        raise ConfigError(problems)


def load_checked(config_dir: Path, templates_dir: Path) -> tuple[Agreements, Renderer]:
    """Agreements and a renderer whose every template renders for every center, or ConfigError."""
    agreements, renderer = load(config_dir, templates_dir)
    check_templates(agreements, renderer)
    return agreements, renderer


def inputs_digest(config_dir: Path, templates_dir: Path) -> str:
    """A hash of everything ``check_templates``' verdict depends on: the config and template
    files, this package's code and the template engine's version. The same digest gives the
    same verdict, so a restart with nothing changed need not render everything again."""
    digest = hashlib.sha256()
    sources = (
        ("code", Path(__file__).parents[1], "*.py"),
        ("config", config_dir, "*"),
        ("templates", templates_dir, "*"),
    )
    for label, root, pattern in sources:
        for path in sorted(p for p in root.rglob(pattern) if p.is_file()):
            digest.update(f"{label}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    for distribution in ("jinja2", "markupsafe", "pydantic"):
        digest.update(f"{distribution}=={version(distribution)}\0".encode())
    return digest.hexdigest()
