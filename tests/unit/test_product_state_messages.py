"""Every message as a clinician reads it in each state the product can be in: before shipment,
shipped, at the center, lymphodepletion started, infused, cancelled. What the center must do
is said, and what would be wrong in that state is not; each failed attribute carries its
clinical guidance, and the infusion window is the label's for the patient's indication."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from oos_notify.agreements.config import load_agreements
from oos_notify.agreements.vocabulary import Disposition
from oos_notify.delivery.messaging import center_ids, incident_view
from oos_notify.delivery.rendering import SUBJECT_LIMIT, MessageContext, Renderer
from oos_notify.ops.config_check import sample_context
from oos_notify.store.models import Incident

ROOT = Path(__file__).resolve().parents[2]
AGREEMENTS = load_agreements(ROOT / "config")
AGREEMENT = AGREEMENTS.effective("mercy-general-main")
RENDERER = Renderer(ROOT / "templates")
KINDS = sorted(p.name for p in (ROOT / "templates").iterdir() if p.is_dir() and p.name != "centers")
NOW = datetime(2026, 11, 24, 15, 12, tzinfo=UTC)  # Tue 24 Nov 2026, 09:12 in Chicago
INFUSED_AT = datetime(2026, 11, 20, 16, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Situation:
    """An incident's product state and key dates, as the messages must reflect them."""

    status: str | None
    disposition: str = "under_investigation"
    lymphodepletion_start: str = "2026-11-30"
    lymphodepletion_end: str = "2026-12-02"
    indication: str | None = "dlbcl"
    attributes: tuple[str, ...] = ("viability",)
    late: bool = False
    extra_dates: dict[str, str] = field(default_factory=dict)


SHIPPED_ON = {"product_shipment": "2026-11-23"}
SITUATIONS = {
    "state unknown": Situation(None),
    "before shipment": Situation("in_manufacturing"),
    "shipped": Situation("shipped", extra_dates=SHIPPED_ON),
    "at the center": Situation("at_center", extra_dates=SHIPPED_ON),
    "lymphodepletion started": Situation(
        "at_center", lymphodepletion_start="2026-11-23", lymphodepletion_end="2026-11-25"
    ),
    "infused": Situation("infused", attributes=("sterility",), late=True),
    "cancelled before shipment": Situation("in_manufacturing", disposition="cancelled"),
    "cancelled, shipped": Situation("shipped", disposition="cancelled", extra_dates=SHIPPED_ON),
    "cancelled at the center": Situation("at_center", disposition="cancelled"),
    "cancelled, lymphodepletion started": Situation(
        "in_manufacturing", disposition="cancelled", lymphodepletion_start="2026-11-24"
    ),
}


def incident_in(situation: Situation) -> Incident:
    infused = situation.status == "infused"
    return Incident(
        id="inc_TEST",
        incident_ref="OOS-2026-0142",
        center_id="mercy-general-main",
        product_code="CARTX",
        lot_number="LOT-24-1187",
        chain_of_identity="COI-8K2M-4471",
        opening_type="late_result" if situation.late else "release_failure",
        plan_type="late_result" if situation.late else "release_failure",
        severity="critical" if situation.late else "major",
        status="notifying",
        disposition=situation.disposition,
        product_status=situation.status,
        infused_at=INFUSED_AT if infused else None,
        indication=situation.indication,
        failed_attributes=[
            {"attribute": a, "specification": "in spec", "result": "out of spec", "method": None}
            for a in situation.attributes
        ],
        key_dates={
            "lymphodepletion_start": situation.lymphodepletion_start,
            "lymphodepletion_end": situation.lymphodepletion_end,
            **situation.extra_dates,
        },
        summary=None,
        qa_contact={
            "name": "A. Rivera",
            "email": "qa@manufacturer.example",
            "phone": "+1 555 0100",
        },
        agreement_version="test",
        agreement={},
        opened_at=NOW,
        updated_at=NOW,
    )


def context_in(situation: Situation, asks_decision: bool = False) -> MessageContext:
    """A message about the incident in ``situation`` as the service renders it at NOW."""
    incident = incident_in(situation)
    sample = sample_context(
        AGREEMENT,
        disposition=Disposition(situation.disposition),
        late_result=situation.late,
        asks_decision=asks_decision,
    )
    return sample.model_copy(
        update={
            "incident": incident_view(incident, AGREEMENT, NOW).model_copy(
                update={"oos_release": sample.incident.oos_release}
            ),
            "qa_contact": sample.qa_contact.model_copy(update={"name": "A. Rivera"})
            if sample.qa_contact
            else None,
        }
    )


def read(kind: str, situation: Situation, asks_decision: bool = False) -> tuple[str, str, str]:
    """The subject, and the text and HTML bodies with their lines joined and tags removed, so a
    sentence reads whole across a wrap or a bold word."""
    rendered = RENDERER.render(kind, context_in(situation, asks_decision), center_ids(AGREEMENT))
    html = re.sub(r"<[^>]+>", "", rendered.html).replace("&#39;", "'").replace("&amp;", "&")
    return rendered.subject, " ".join(rendered.text.split()), " ".join(html.split())


def sent_in(situation: Situation) -> list[str]:
    """The messages the service can send about an incident in this state: a late result opens
    with its own first notice (a plan for late results cannot send the other)."""
    first = "late_result_initial" if situation.late else "release_failure_initial"
    other = {"late_result_initial", "release_failure_initial"} - {first}
    return [k for k in KINDS if k not in other]


NEVER = (
    "has to be repeated",
    "Hold patient communication",
    "offers to release",
    "made with the results below",
    "Keep it where it is stored",
    "will not be shipped. The treating physician decides the next steps.",
)


@pytest.mark.parametrize("name", SITUATIONS)
def test_every_message_in_every_state_says_nothing_untrue_for_it(name: str) -> None:
    situation = SITUATIONS[name]
    for kind in sent_in(situation):
        subject, text, html = read(kind, situation)
        assert len(subject) <= SUBJECT_LIMIT, subject
        assert "COI-8K2M-4471" not in subject
        for part in (text, html):
            for wrong in NEVER:
                assert wrong not in part, (kind, wrong)
            if situation.status == "infused":
                for wrong in ("do not thaw", "Do not start lymphodepletion", "label's window"):
                    assert wrong not in part, (kind, wrong)
                assert "infusion window" not in part.casefold(), kind
            if name.endswith("lymphodepletion started"):
                for wrong in (
                    "advises not starting lymphodepletion",
                    "Do not start lymphodepletion",
                    "before any lymphodepleting chemotherapy starts",
                    "before lymphodepleting chemotherapy starts",
                    "before lymphodepletion is scheduled",
                    "do not start it for this lot",
                ):
                    assert wrong not in part, (kind, wrong)
            if situation.disposition == "cancelled":
                assert "infusion window" not in part.casefold(), kind
                assert "label's window" not in part, kind


@pytest.mark.parametrize(
    ("name", "says"),
    [
        (
            "shipped",
            "2. The product is on its way to the center. Quarantine it on receipt, in the cell "
            "lab: do not thaw it and do not infuse it. Keep it quarantined until Example "
            "Therapeutics gives its disposition in writing. If it is still in its shipper, move "
            "it to the cell lab's liquid-nitrogen storage before Wed 02 Dec 2026: the shipper "
            "holds its temperature for 9 days from shipment.",
        ),
        (
            "at the center",
            "2. The product is at the center. Quarantine it in the cell lab now: do not thaw it "
            "and do not infuse it. Keep it quarantined until Example Therapeutics gives its "
            "disposition in writing. If it is still in its shipper, move it to the cell lab's "
            "liquid-nitrogen storage before Wed 02 Dec 2026",
        ),
        (
            "before shipment",
            "2. The product has not been shipped: Example Therapeutics keeps it until its "
            "disposition is known.",
        ),
        (
            "state unknown",
            "2. If the product has reached the center, quarantine it in the cell lab: do not "
            "thaw it and do not infuse it",
        ),
    ],
)
def test_the_first_notice_says_where_to_hold_the_product_and_until_when(
    name: str, says: str
) -> None:
    _, text, html = read("release_failure_initial", SITUATIONS[name])
    assert says in text
    assert says[3:] in html
    if name in ("before shipment", "state unknown"):
        assert "shipper" not in text


def test_the_first_notice_after_lymphodepletion_started_asks_to_call_now() -> None:
    _, text, html = read("release_failure_initial", SITUATIONS["lymphodepletion started"])
    says = (
        "Lymphodepletion started on Mon 23 Nov 2026. Tell the treating physician today and call "
        "Example Therapeutics QA on +1 555 0100 now, so that the disposition is known as early "
        "as it can be."
    )
    assert f"3. {says}" in text
    assert says in html
    assert "should not start" not in text


def test_the_first_notice_before_lymphodepletion_advises_waiting_for_the_disposition() -> None:
    _, text, _ = read("release_failure_initial", SITUATIONS["at the center"])
    assert (
        "3. Review the key dates with the treating physician: Example Therapeutics advises not "
        "starting lymphodepletion before the product's disposition is known." in text
    )


def test_the_first_notice_leaves_telling_the_patient_to_the_center() -> None:
    _, text, html = read("release_failure_initial", SITUATIONS["shipped"])
    says = (
        "When and how the patient is told is for the treating physician and the center to "
        "decide. If the product is later offered for use although out of specification, the "
        "patient's informed consent needs the patient told of this result."
    )
    assert f"4. {says}" in text
    assert says in html


@pytest.mark.parametrize(
    ("name", "subject", "says"),
    [
        (
            "cancelled at the center",
            "Quarantine the product: OOS-2026-0142, lot LOT-24-1187 cancelled",
            [
                "The lot has been cancelled: the product at the center must not be used for "
                "this patient.",
                "Quarantine the product in the cell lab now: do not thaw it and do not infuse it. "
                "Label it not for use and keep it until Example Therapeutics QA says whether it "
                "is returned or destroyed (a destruction is recorded under the center's "
                "procedure); call Example Therapeutics QA (A. Rivera, +1 555 0100) to arrange it.",
                "Do not start lymphodepletion for this lot.",
            ],
        ),
        (
            "cancelled, shipped",
            "Quarantine the product: OOS-2026-0142, lot LOT-24-1187 cancelled",
            [
                "The lot has been cancelled: the product on its way to the center must not be "
                "used for this patient.",
                "Quarantine the product on receipt, in the cell lab: do not thaw it and do not "
                "infuse it. Label it not for use and keep it until Example Therapeutics QA says "
                "whether it is returned or destroyed; call Example Therapeutics QA (A. Rivera, "
                "+1 555 0100) to arrange it.",
                "move it to the cell lab's liquid-nitrogen storage before Wed 02 Dec 2026",
            ],
        ),
        (
            "cancelled before shipment",
            "Do not lymphodeplete: OOS-2026-0142, lot LOT-24-1187 cancelled",
            [
                "The lot has been cancelled and will not be shipped.",
                "Do not start lymphodepletion for this lot. The treating physician decides what "
                "follows; call Example Therapeutics QA (A. Rivera, +1 555 0100) to plan it.",
            ],
        ),
        (
            "cancelled, lymphodepletion started",
            "Tell the physician: OOS-2026-0142, lot LOT-24-1187 cancelled",
            [
                "Lymphodepletion started on Tue 24 Nov 2026, but this lot will not be infused. "
                "Tell the treating physician today: the patient's next steps are the physician's "
                "decision; call Example Therapeutics QA (A. Rivera, +1 555 0100) about a new "
                "manufacture.",
            ],
        ),
    ],
)
def test_a_cancellation_says_what_to_do_with_the_product_where_it_is_and_whom_to_call(
    name: str, subject: str, says: list[str]
) -> None:
    shown, text, html = read("disposition_notice", SITUATIONS[name])
    assert shown == subject
    for sentence in says:
        assert sentence in text, sentence
        assert sentence in html, sentence
    if SITUATIONS[name].status in ("shipped", "at_center"):
        assert "will not be shipped" not in text


@pytest.mark.parametrize(
    ("indication", "label", "last_day"),
    [
        ("all", "B-cell precursor acute lymphoblastic leukaemia (ALL)", "Wed 16 Dec 2026"),
        (
            "dlbcl",
            "relapsed or refractory diffuse large B-cell lymphoma (DLBCL)",
            "Sun 13 Dec 2026",
        ),
        ("fl", "relapsed or refractory follicular lymphoma (FL)", "Tue 08 Dec 2026"),
    ],
)
def test_the_infusion_window_is_the_labels_for_the_indication_and_repeating_is_the_physicians(
    indication: str, label: str, last_day: str
) -> None:
    situation = Situation("at_center", indication=indication)
    window = next(w for w in AGREEMENT.products[0].infusion_windows if w.indication == indication)
    for kind in ("release_failure_initial", "incident_update", "escalation_reminder"):
        _, text, html = read(kind, situation)
        for part in (text, html):
            assert (
                f"The label's window for {label}: infuse 2 days to {window.latest.amount} days "
                f"after lymphodepletion ends. Source: {window.source}." in part
            ), kind
            assert f"that is Fri 04 Dec 2026 to {last_day}" in part
            assert (
                "Whether to repeat lymphodepletion if the product cannot be infused within it is "
                "the treating physician's decision." in part
            )


def test_without_an_indication_every_window_of_the_label_is_listed() -> None:
    _, text, _ = read("release_failure_initial", Situation("at_center", indication=None))
    assert "The label's window depends on the indication, which this notice does not name:" in text
    for name, latest in (("(ALL)", 14), ("(DLBCL)", 11), ("(FL)", 6)):
        assert f"{name}: infuse 2 days to {latest} days after lymphodepletion ends" in text
    assert "is the treating physician's decision" in text


GUIDANCE = {g.attribute: g for g in AGREEMENT.clinical_guidance}


@pytest.mark.parametrize(
    "attribute", ["sterility", "mycoplasma", "endotoxin", "viability", "dose", "potency"]
)
def test_each_failed_attribute_carries_its_guidance_for_the_products_state(
    attribute: str,
) -> None:
    guidance = GUIDANCE[attribute]
    before = Situation("at_center", attributes=(attribute.upper(),), late=True)
    after = Situation("infused", attributes=(attribute,), late=True)

    _, text, html = read("late_result_initial", before)
    for part in (text, html):
        assert f"{attribute}: {' '.join(guidance.not_infused.split())}" in part
        assert guidance.infused.split(".")[0] not in part
        assert f"(Source: {guidance.source}.)" in part.replace("&lt;", "<").replace("&gt;", ">")

    _, text, html = read("late_result_initial", after)
    for part in (text, html):
        assert f"{attribute}, for the patient who received it: {guidance.infused}" in part
        assert guidance.not_infused.split(".")[0] not in part
    assert "2. Act on what the result means for the patient, under WHAT THE RESULT MEANS" in text


def test_mycoplasma_after_infusion_asks_for_pcr_not_blood_cultures() -> None:
    _, text, html = read(
        "late_result_initial", Situation("infused", attributes=("Mycoplasma",), late=True)
    )
    for part in (text, html):
        assert "Routine blood cultures do not detect Mycoplasma" in part
        assert "ask the laboratory for Mycoplasma PCR (nucleic acid amplification) on blood" in part
        assert "Take blood cultures" not in part
        assert "1. The treating physician assesses the patient now for signs of infection." in text


def test_a_sterility_result_after_infusion_asks_for_blood_cultures_before_antimicrobials() -> None:
    _, text, _ = read("late_result_notice", SITUATIONS["infused"])
    assert "Take blood cultures before starting antimicrobials" in text
    assert "acting on what the result means for the patient (below)" in text


def test_a_result_nobody_wrote_guidance_for_sends_the_reader_to_qa() -> None:
    _, text, _ = read("release_failure_initial", Situation("at_center", attributes=("identity",)))
    assert (
        "identity: Example Therapeutics has no written guidance for this result; ask Example "
        "Therapeutics QA what it means for the patient." in text
    )


def test_with_the_state_unknown_both_meanings_of_the_result_are_given() -> None:
    _, text, _ = read("late_result_initial", Situation(None, attributes=("endotoxin",), late=True))
    guidance = GUIDANCE["endotoxin"]
    assert f"endotoxin, if the product has not been infused: {guidance.not_infused}" in text
    assert f"If it has been infused: {guidance.infused}" in text


def test_the_decision_asks_the_physician_to_request_supply_on_the_risk_evaluation() -> None:
    _, text, html = read(
        "oos_release_decision",
        Situation("at_center", disposition="oos_release_offered"),
        asks_decision=True,
    )
    says = (
        "Example Therapeutics can supply it for this patient only at your request as the "
        "treating physician. Make that decision on Example Therapeutics's risk evaluation of the "
        "lot (whether it is on file is on the checklist below): the results below say what "
        "failed and are not a risk evaluation."
    )
    for part in (text, html):
        assert says in part
        assert "your request that Example Therapeutics supply it for this patient" in part
        assert "offers to release" not in part
        assert "made with the results below" not in part


@pytest.mark.parametrize(
    "kind", ["escalation_final", "patient_liaison_urgent", "late_result_notice"]
)
def test_messages_after_lymphodepletion_started_say_so_instead_of_before_it_starts(
    kind: str,
) -> None:
    _, text, _ = read(kind, SITUATIONS["lymphodepletion started"])
    assert "lymphodepletion started on Mon 23 Nov 2026" in text.replace("Lymph", "lymph")
    assert "before any lymphodepleting chemotherapy starts" not in text
    assert "before lymphodepleting chemotherapy starts" not in text
