"""``check-config``: agreements and templates checked together, each problem with its place."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from oos_notify.agreements.config import (
    Agreements,
    ConfigError,
    ConfigProblem,
    EffectiveAgreement,
    load_agreements,
)
from oos_notify.agreements.vocabulary import AckResponse, Disposition
from oos_notify.delivery.messaging import center_ids
from oos_notify.delivery.rendering import (
    AckLinkView,
    AcknowledgementView,
    CenterView,
    FailedAttributeView,
    FailedDeliveryView,
    ForwardedReplyView,
    IncidentView,
    MessageContext,
    PersonView,
    Renderer,
    RenderError,
    disposition_label,
    key_date_views,
    local_time,
)
from oos_notify.inbound.handling import FORWARDED_REPLY_TEMPLATE
from oos_notify.incidents.acknowledgement import DECISION_RECEIPT_TEMPLATE, RECEIPT_TEMPLATE
from oos_notify.incidents.planning import (
    DECISION_TEMPLATE,
    DELIVERY_FAILURE_TEMPLATE,
    FOLLOW_UP_TEMPLATES,
)

SAMPLE_INSTANT = datetime(2026, 11, 24, 15, 12, tzinfo=UTC)
BUILT_IN_TEMPLATES = frozenset(
    {
        RECEIPT_TEMPLATE,
        DECISION_RECEIPT_TEMPLATE,
        DECISION_TEMPLATE,
        DELIVERY_FAILURE_TEMPLATE,
        FORWARDED_REPLY_TEMPLATE,
        *FOLLOW_UP_TEMPLATES.values(),
    }
)
"""Messages the service sends on its own, whatever the plans say."""


def sample_context(
    agreement: EffectiveAgreement,
    with_ack_link: bool = True,
    disposition: Disposition = Disposition.UNDER_INVESTIGATION,
    asks_decision: bool = False,
) -> MessageContext:
    """A realistic context for a center, to check and preview templates without an incident."""
    product = agreement.products[0]
    contact = (agreement.contacts or agreement.system_contacts)[0]
    answer = AcknowledgementView(
        by=f"{contact.name} <{contact.email}>",
        role=str(contact.roles[0]),
        at=local_time(SAMPLE_INSTANT, agreement.timezone),
        response=AckResponse.RECEIVED.label,
        comment="Physician informed.",
    )
    decided = disposition is Disposition.OOS_RELEASE_OFFERED and not asks_decision
    return MessageContext(
        incident=IncidentView(
            id="inc_SAMPLE",
            ref="OOS-SAMPLE-0001",
            status="notifying",
            severity="major",
            disposition=disposition,
            disposition_label=disposition_label(disposition),
            product_code=product.code,
            product_name=product.name,
            lot_number="LOT-SAMPLE-01",
            chain_of_identity="COI-SAMPLE-0001",
            summary="Final product viability below specification. Investigation opened.",
            failed_attributes=[
                FailedAttributeView(
                    attribute="viability",
                    specification=">= 80 %",
                    result="71 %",
                    method="flow cytometry 7-AAD",
                )
            ],
            key_dates=key_date_views(
                {"lymphodepletion_start": "2026-11-30", "planned_infusion": "2026-12-03"}
            ),
            opened_at=local_time(SAMPLE_INSTANT, agreement.timezone),
        ),
        center=CenterView(
            id=agreement.center_id,
            name=agreement.center_name,
            health_system=agreement.health_system_name,
            timezone=agreement.timezone,
        ),
        recipient=PersonView(name=contact.name, email=contact.email, role=str(contact.roles[0])),
        manufacturer=agreement.manufacturer_name,
        qa_contact=PersonView(
            name="QA Release Desk", email="qa@manufacturer.example", phone="+1 555 0100"
        ),
        step_level=0,
        ack=AckLinkView(
            url="http://127.0.0.1:8000/ack/SAMPLE-TOKEN",
            expires_at=local_time(SAMPLE_INSTANT, agreement.timezone),
        )
        if with_ack_link
        else None,
        asks_decision=asks_decision,
        acknowledgement=answer,
        decision=answer.model_copy(update={"response": AckResponse.ACCEPT_OOS_PRODUCT.label})
        if decided
        else None,
        failed_delivery=FailedDeliveryView(
            recipient=PersonView(
                name=contact.name, email=contact.email, role=str(contact.roles[0])
            ),
            template="release_failure_initial",
            failed_at=local_time(SAMPLE_INSTANT, agreement.timezone),
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
        ),
    )


def sample_contexts(agreement: EffectiveAgreement) -> list[MessageContext]:
    """One sample per disposition, one asking for a decision and one reporting a message that
    could not be built: every branch a template has for them is rendered by ``check-config``,
    not first at 3 a.m."""
    samples = [
        *(sample_context(agreement, disposition=d) for d in Disposition),
        sample_context(agreement, disposition=Disposition.OOS_RELEASE_OFFERED, asks_decision=True),
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
    bounced = refused.model_copy(update={"bounced": True})
    return [
        *samples,
        samples[0].model_copy(update={"failed_delivery": never_sent}),
        samples[0].model_copy(update={"failed_delivery": bounced}),
    ]


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
        names = set(BUILT_IN_TEMPLATES)
        for plan in agreement.plans.values():
            names |= {s.template for s in plan.steps}
            names |= {s.template for s in plan.patient_communication}
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
                for context in sample_contexts(agreement):
                    renderer.render(name, context, chain)
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
