"""The pathway enforced: a checklist item gates a transition (``shipped``, ``infused``,
``resolved``) of the out-of-specification product offered under it, and a decider may not
accept before the documents the pathway puts first are on file.

Pure functions over the offer the incident keeps (``Incident.oos_release``): the caller says
what the event records, and gets back what stands in its way.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from oos_notify.agreements.config import OosPathway
from oos_notify.agreements.vocabulary import (
    GATED_TRANSITIONS,
    AckResponse,
    Disposition,
    ProductStatus,
    Transition,
    transitions_reached,
)

DECLINED = frozenset({AckResponse.REQUEST_REMANUFACTURE.value, AckResponse.DECLINE_PRODUCT.value})
"""Decisions after which the offered product goes no further: its gates no longer apply."""


@dataclass(frozen=True)
class OpenItem:
    id: str
    label: str
    gates: str
    owner: str


def item_terms(pathway: OosPathway, offered_at: datetime) -> dict[str, dict[str, Any]]:
    """What the incident keeps of each item's gate, owner and due time, set when offered."""
    return {
        item.id: {
            "gates": item.gates.value,
            "owner": str(item.owner),
            "due_at": (offered_at + item.due.as_timedelta()).isoformat() if item.due else None,
        }
        for item in pathway.checklist
    }


def recorded(
    before: ProductStatus | None, after: ProductStatus | None, resolving: bool
) -> set[Transition]:
    """The gated transitions an event records: the product states it newly reaches, and the
    resolution."""
    reached = set(transitions_reached(after) - transitions_reached(before)) if after else set()
    if resolving:
        reached.add(Transition.RESOLVED)
    return reached


def applies(offer: dict[str, Any] | None, disposition: str | None, decision: str | None) -> bool:
    """Whether the offered product is still the one going ahead: offered, and not declined."""
    return (
        offer is not None
        and disposition == Disposition.OOS_RELEASE_OFFERED
        and decision not in DECLINED
    )


def gates_checked(transitions: Collection[Transition], went_ahead: bool) -> set[Transition]:
    """The gates a step must have clear: a product is not infused without being shipped, so an
    item gating shipment is needed before infusion too; a resolution needs the items gating it,
    and every item once the product went ahead (accepted and infused)."""
    checked: set[Transition] = set()
    product = [t for t in transitions if t is not Transition.RESOLVED]
    if product:
        latest = max(GATED_TRANSITIONS.index(t) for t in product)
        checked |= set(GATED_TRANSITIONS[: latest + 1]) - {Transition.RESOLVED}
    if Transition.RESOLVED in transitions:
        checked |= set(GATED_TRANSITIONS) if went_ahead else {Transition.RESOLVED}
    return checked


def open_items(
    offer: dict[str, Any], gates: Collection[Transition], confirming: Iterable[str]
) -> list[OpenItem]:
    """The items not on file (nor confirmed by the event itself) that gate one of ``gates``."""
    confirmed = set(confirming)
    found = []
    for item in offer["items"]:
        gate = item.get("gates", Transition.INFUSED.value)
        if item["reference"] or item["id"] in confirmed or Transition(gate) not in gates:
            continue
        found.append(OpenItem(item["id"], item["label"], gate, item.get("owner", "")))
    return found


def refusal(
    incident_ref: str, offer: dict[str, Any], transition: Transition, items: list[OpenItem]
) -> str:
    """The 409's words: the transition refused, each item missing with its owner, and how to
    confirm it."""
    missing = "; ".join(
        f"{i.id} ({i.label}, gates {i.gates}{', owner ' + i.owner if i.owner else ''})"
        for i in items
    )
    return (
        f"incident {incident_ref!r} cannot be recorded as {transition}: the "
        f"{offer['pathway']} checklist still needs {missing}; confirm them with oos_checklist "
        "(in this event or an earlier update event)"
    )


def missing_before_decision(offer: dict[str, Any] | None, response: AckResponse) -> list[str]:
    """The items a pathway puts before acceptance (the EU's risk evaluation) not yet on file."""
    if offer is None or response is not AckResponse.ACCEPT_OOS_PRODUCT:
        return []
    required = offer.get("definition", {}).get("decision_requires", [])
    on_file = {item["id"] for item in offer["items"] if item["reference"]}
    return [item for item in required if item not in on_file]


def requests_supply(offer: dict[str, Any] | None) -> bool:
    """Whether the pathway words the decision as the physician's request for supply."""
    return bool(offer and offer.get("definition", {}).get("physician_requests_supply"))
