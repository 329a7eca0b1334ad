"""The clinical parts of an agreement: who decides, who stops an escalation, the pathway of an
OOS product, the infusion window. Each mistake is refused with its file and field."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from oos_notify.agreements.config import load_agreements
from oos_notify.agreements.vocabulary import CenterRole, EventType
from oos_notify.incidents.events import EventIn
from tests.conftest import release_failure
from tests.unit.config_files import edit, find, problems_of

STANDARD = "config/plans/standard.yaml"
URGENT = "config/plans/urgent.yaml"
MERCY = "config/health_systems/mercy-health.yaml"
MANUFACTURER = "config/manufacturer.yaml"
DR_ORTIZ = (
    '{id: mgm-md, name: "Dr. Lena Ortiz, CAR-T attending", email: ct-md@mercy.example, '
    'phone: "+1 312 555 0144", roles: [physician], decider: true}'
)


def test_the_example_plans_say_who_stops_and_who_decides(config: Path) -> None:
    agreements = load_agreements(config)
    standard = agreements.plans["standard"]
    assert standard.stops_escalation == [
        CenterRole.COORDINATOR,
        CenterRole.COORDINATOR_BACKUP,
        CenterRole.PHYSICIAN,
    ]
    assert [str(r) for r in standard.steps[0].notify] == ["coordinator", "physician", "cell_lab"]
    assert standard.decision is not None and standard.decision.due is not None
    assert "manufacturer:medical_affairs" in [
        str(r) for r in agreements.plans["urgent"].steps[0].notify
    ]
    mercy = agreements.effective("mercy-general-main")
    assert [c.id for c in mercy.deciders([CenterRole.PHYSICIAN])] == ["mgm-md"]


def test_a_plan_without_stops_escalation_lets_the_coordinator_and_the_physician_stop_it(
    config: Path,
) -> None:
    edit(
        config,
        "plans/standard.yaml",
        "stops_escalation: [coordinator, coordinator_backup, physician]\n",
        "",
    )
    plan = load_agreements(config).plans["standard"]
    assert plan.stops_escalation == [CenterRole.COORDINATOR, CenterRole.PHYSICIAN]


def test_a_decision_plan_at_a_site_without_an_individual_decider_is_refused(
    config: Path,
) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        DR_ORTIZ,
        DR_ORTIZ.replace(", decider: true", ""),
    )
    problems = problems_of(config)
    for event_type, plan in (("release_failure", "standard"), ("late_result", "urgent")):
        find(
            problems,
            MERCY,
            f"sites[0].plans.{event_type}",
            f"plan '{plan}' asks a physician to decide",
            "no physician of site 'mercy-general-main' or of 'mercy-health' is marked decider",
        )
    assert not [p for p in problems if "mercy-west" in p.message]


def test_a_decision_plan_at_a_site_without_a_pathway_is_refused(config: Path) -> None:
    edit(config, "health_systems/mercy-health.yaml", "oos_pathway: us-expanded-access ", "")
    problems = problems_of(config)
    find(problems, MERCY, "sites[0].oos_pathway", "'mercy-general-main' has plans", "oos_pathway")
    find(problems, MERCY, "sites[1].oos_pathway", "'mercy-west' has plans", "no oos_pathway")


def test_an_unknown_pathway_is_refused_naming_the_known_ones(config: Path) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        "oos_pathway: us-expanded-access ",
        "oos_pathway: us-compassionate ",
    )
    find(
        problems_of(config),
        MERCY,
        "oos_pathway",
        "no oos pathway 'us-compassionate'",
        "known: us-expanded-access, us-expanded-access-protocol, eu-atmp-oos",
    )


def test_a_late_result_plan_that_sends_the_pre_release_notice_is_refused(config: Path) -> None:
    edit(
        config,
        "plans/urgent.yaml",
        "template: late_result_initial",
        "template: release_failure_initial",
    )
    find(
        problems_of(config),
        MERCY,
        "sites[0].plans.late_result",
        "sends release_failure_initial, which tells the center to hold lymphodepletion",
    )


def test_a_decision_escalation_needs_a_deadline(config: Path) -> None:
    edit(config, "plans/standard.yaml", "  due: {before: lymphodepletion_start, by: 72h}\n", "")
    find(problems_of(config), STANDARD, "decision", "'escalate' needs 'due'")


def test_a_decision_inform_role_nobody_holds_is_refused(config: Path) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        "  - {id: mh-quality, name: Cellular Therapy Quality Unit, "
        "email: ct-quality@mercy.example, roles: [quality]}\n",
        "",
    )
    find(problems_of(config), MERCY, "sites[0].plans.release_failure", "notifies quality")


@pytest.mark.parametrize(
    ("window", "message"),
    [
        pytest.param("{earliest: 5d, latest: 2d}", "earliest 5d is after latest 2d", id="reversed"),
        pytest.param("{earliest: 2bd, latest: 4d}", "not business days", id="business-days"),
        pytest.param(
            "{counted_from: planned_infusion, earliest: 2d, latest: 4d}",
            "counted_from",
            id="wrong-anchor",
        ),
    ],
)
def test_an_infusion_window_that_cannot_be_right_is_refused(
    config: Path, window: str, message: str
) -> None:
    edit(
        config,
        "manufacturer.yaml",
        '{counted_from: lymphodepletion_end, earliest: 2d, latest: 4d, source: "bcmacel '
        'prescribing information, 2.2"}',
        window,
    )
    problems = [p for p in problems_of(config) if p.file == MANUFACTURER]
    assert problems and all(p.field.startswith("products[1]") for p in problems), problems
    assert any(message in p.message or message in p.field for p in problems), problems


def test_a_phone_number_with_letters_is_refused(config: Path) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        'on_call_phone: "+1 312 555 0100"',
        'on_call_phone: "call the desk"',
    )
    find(problems_of(config), MERCY, "on_call_phone", "should match pattern")


def test_a_pathway_checklist_item_written_twice_is_refused(config: Path) -> None:
    edit(
        config,
        "manufacturer.yaml",
        "owner: physician, due: 3d}\n  - id: us-expanded-access-protocol",
        "owner: physician, due: 3d}\n"
        '      - {id: consent, label: "Consent again"}\n  - id: us-expanded-access-protocol',
    )
    find(
        problems_of(config), MANUFACTURER, "oos_pathways[0]", "checklist item 'consent' is repeated"
    )


# --- events stored before the new fields -------------------------------------------------------


def test_an_event_without_the_new_fields_hashes_as_it_did_before_they_existed() -> None:
    body = release_failure()
    event = EventIn.model_validate(body)
    # The hash the service gave this event before product_status and the rest were added
    before = {
        k: v
        for k, v in event.model_dump(mode="json").items()
        if k
        not in (
            "product_status",
            "infused_at",
            "indication",
            "oos_pathway",
            "oos_checklist",
            "remanufacture",
            "within_spec_basis",
            "treating_physician",
            "drill",
        )
    }
    canonical = json.dumps(before, sort_keys=True, separators=(",", ":"))
    assert event.body_hash() == hashlib.sha256(canonical.encode()).hexdigest()
    infused = EventIn.model_validate(
        {
            **body,
            "type": "late_result",
            "product_status": "infused",
            "infused_at": body["occurred_at"],
        }
    )
    assert (
        infused.body_hash() != EventIn.model_validate({**body, "type": "late_result"}).body_hash()
    )


def test_the_effective_agreement_of_an_incident_opened_before_the_new_fields_still_loads(
    config: Path,
) -> None:
    from oos_notify.agreements.config import EffectiveAgreement

    stored = load_agreements(config).effective("mercy-general-main").model_dump(mode="json")
    for name in ("on_call_phone", "oos_pathway", "clinical_guidance"):
        del stored[name]
    for product in stored["products"]:
        del product["infusion_windows"], product["shipper_hold"]
    for plan in stored["plans"].values():
        del plan["stops_escalation"], plan["decision"]
    for contact in stored["contacts"]:
        del contact["decider"], contact["phone"]

    old = EffectiveAgreement.model_validate(stored)

    assert old.plans[EventType.RELEASE_FAILURE].stops_escalation == ["coordinator", "physician"]
    assert old.plans[EventType.RELEASE_FAILURE].decision is None
    assert old.oos_pathway is None and old.deciders([CenterRole.PHYSICIAN]) == []
    assert old.clinical_guidance == [] and old.guidance("sterility") is None
    assert old.products[0].window_for("dlbcl") is None


# --- guidance per attribute, windows per indication, the shipper's hold -----------------------


def test_the_example_config_gives_guidance_for_each_attribute_and_windows_per_indication(
    config: Path,
) -> None:
    agreement = load_agreements(config).effective("mercy-general-main")
    for name in ("sterility", "Mycoplasma", "endotoxin", "viability", "dose", "potency"):
        assert agreement.guidance(f"  {name} ") is not None, name
    assert agreement.guidance("Bacterial Endotoxins") == agreement.guidance("endotoxin")
    mycoplasma = agreement.guidance("mycoplasma")
    assert mycoplasma is not None
    assert "PCR" in mycoplasma.infused and "do not detect Mycoplasma" in mycoplasma.infused
    product = agreement.products[0]
    windows = {i: product.window_for(i) for i in product.indications()}
    assert {i: w.latest.amount for i, w in windows.items() if w} == {
        "all": 14,
        "dlbcl": 11,
        "fl": 6,
    }
    assert product.window_for(None) is None


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        pytest.param(
            "  - attribute: gram stain\n    also: [gram-stain]",
            "  - attribute: gram stain\n    also: [gram-stain, Sterility]",
            "",
            "clinical guidance for 'sterility' is given twice",
            id="guidance-twice",
        ),
        pytest.param(
            "  - attribute: potency\n    also: [potency assay, interferon-gamma release, "
            "ifn-gamma release]\n    not_infused: >-\n      Potency below specification means "
            "the cells may act less strongly against the tumour; the\n      manufacturer's risk "
            "evaluation states what is known of the lot's expected effect.\n",
            "  - attribute: potency\n",
            "clinical_guidance.6.not_infused",
            "Field required",
            id="guidance-incomplete",
        ),
        pytest.param(
            "{indication: fl,",
            "{indication: dlbcl,",
            "products.0",
            "indication 'dlbcl' is repeated",
            id="indication-twice",
        ),
        pytest.param(
            "    shipper_hold: 9d\n    infusion_windows:",
            "    shipper_hold: 9d\n    infusion_window_after_lymphodepletion: {earliest: 2d, "
            "latest: 14d}\n    infusion_windows:",
            "products.0",
            "not both",
            id="both-kinds-of-window",
        ),
        pytest.param(
            "    shipper_hold: 9d\n    infusion_windows:",
            "    shipper_hold: 5bd\n    infusion_windows:",
            "products.0",
            "whole calendar days",
            id="hold-in-business-days",
        ),
        pytest.param(
            'source: "tisagenlecleucel prescribing information, 2.2 (FL)"}',
            "}",
            "products.0.infusion_windows.2.source",
            "Field required",
            id="window-without-source",
        ),
    ],
)
def test_guidance_and_windows_that_cannot_be_right_are_refused(
    config: Path, old: str, new: str, field: str, message: str
) -> None:
    edit(config, "manufacturer.yaml", old, new)
    problems = [p for p in problems_of(config) if p.file == MANUFACTURER]
    assert any(p.field.replace("[", ".").replace("]", "").startswith(field) for p in problems), (
        problems
    )
    assert any(message in p.message for p in problems), problems
