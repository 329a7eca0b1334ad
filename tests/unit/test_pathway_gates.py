"""Which checklist items hold back which transition: the pure rules behind the 409."""

from __future__ import annotations

from typing import Any

from oos_notify.agreements.vocabulary import AckResponse, ProductStatus, Transition
from oos_notify.incidents.pathway_gates import (
    gates_checked,
    missing_before_decision,
    open_items,
    recorded,
)


def item(item_id: str, gates: str, reference: str | None = None) -> dict[str, Any]:
    return {"id": item_id, "label": item_id, "reference": reference, "gates": gates}


OFFER = {
    "pathway": "example",
    "items": [
        item("risk", "shipped", "RE-1"),
        item("request", "shipped"),
        item("consent", "infused"),
        item("summary", "resolved"),
    ],
    "definition": {"decision_requires": ["risk"]},
}


def ids(gates: set[Transition], confirming: tuple[str, ...] = ()) -> list[str]:
    return [i.id for i in open_items(OFFER, gates, confirming)]


def test_an_infusion_recorded_straight_from_manufacturing_passes_the_shipment_gate_too() -> None:
    steps = recorded(ProductStatus.IN_MANUFACTURING, ProductStatus.INFUSED, resolving=False)
    assert steps == {Transition.SHIPPED, Transition.INFUSED}
    assert ids(gates_checked(steps, went_ahead=False)) == ["request", "consent"]


def test_a_product_already_at_the_center_records_no_shipment_again() -> None:
    assert recorded(ProductStatus.SHIPPED, ProductStatus.AT_CENTER, resolving=False) == set()


def test_the_event_that_confirms_an_item_may_record_the_step_it_gates() -> None:
    gates = gates_checked({Transition.SHIPPED}, went_ahead=False)
    assert ids(gates) == ["request"]
    assert ids(gates, confirming=("request",)) == []


def test_a_resolution_needs_its_own_items_and_every_item_once_the_product_went_ahead() -> None:
    assert ids(gates_checked({Transition.RESOLVED}, went_ahead=False)) == ["summary"]
    assert ids(gates_checked({Transition.RESOLVED}, went_ahead=True)) == [
        "request",
        "consent",
        "summary",
    ]


def test_acceptance_waits_for_what_the_pathway_puts_first() -> None:
    offer = {**OFFER, "items": [item("risk", "shipped"), *OFFER["items"][1:]]}
    assert missing_before_decision(offer, AckResponse.ACCEPT_OOS_PRODUCT) == ["risk"]
    assert missing_before_decision(offer, AckResponse.DECLINE_PRODUCT) == []
    assert missing_before_decision(OFFER, AckResponse.ACCEPT_OOS_PRODUCT) == []
