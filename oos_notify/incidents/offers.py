"""An out-of-specification product offered for release: who decides under which rule, the
regulatory pathway it runs under, and the checklist QA confirms before the product may be
recorded as infused and the incident resolved.

The offer's settings are kept on the incident (``Incident.oos_release``) when it is made, so that
a later deadline, revision or checklist confirmation reads what the center was asked under.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from oos_notify.agreements.config import (
    Agreements,
    DecisionRule,
    EffectiveAgreement,
    OosPathway,
)
from oos_notify.agreements.vocabulary import EventType
from oos_notify.errors import Conflict, InvalidFields
from oos_notify.incidents import pathway_gates
from oos_notify.incidents.planning import deciders
from oos_notify.store.outbox import Addressee


@dataclass(frozen=True)
class DecisionSource:
    """Where an offer's decision rules come from, and who is asked under them."""

    agreement: EffectiveAgreement
    rule: DecisionRule
    asked: list[Addressee]
    deputies: list[Addressee] = field(default_factory=list)
    """Site deciders who stand in for the treating physician when the physician's request comes
    back as an automatic reply (``decision.deputies: when_absent``)."""


def decision_source(
    snapshot: EffectiveAgreement,
    agreements: Agreements,
    plan_type: EventType,
    physician: Addressee | None = None,
) -> DecisionSource:
    """The incident's own agreement decides, unless it predates decision rules (an incident
    opened before they existed has no decider in it): then the center's agreement in force.
    A treating physician the event named is asked, with the site's deciders only where the
    rule makes them deputies. Raises Conflict when nobody may decide: the offer is refused
    rather than sent to a group."""
    candidates = [snapshot]
    if snapshot.center_id in agreements.center_ids():
        candidates.append(agreements.effective(snapshot.center_id))
    for agreement in candidates:
        rule = agreement.plans[plan_type].decision
        if rule is None:
            continue
        site = deciders(agreement, rule)
        if physician is not None:
            if rule.deputies == "always":
                return DecisionSource(agreement, rule, [physician, *site])
            deputies = site if rule.deputies == "when_absent" else []
            return DecisionSource(agreement, rule, [physician], deputies)
        if site:
            return DecisionSource(agreement, rule, site)
    plan = snapshot.plans[plan_type]
    raise Conflict(
        f"nobody at center {snapshot.center_id!r} may decide on an out-of-specification product: "
        f"its plan {plan.id!r} needs a decision section (decision: {{ask: [physician]}}) and a "
        "contact of that role marked decider: true"
    )


def pathway_for(
    requested: str | None,
    snapshot: EffectiveAgreement,
    agreements: Agreements,
    current: dict[str, Any] | None,
) -> OosPathway:
    """The pathway an offer runs under: the event's, else the one of an earlier offer, else
    the center's. InvalidFields naming ``oos_pathway`` when there is none."""
    if requested is not None:
        found = agreements.manufacturer.pathway(requested)
        if found is None:
            known = ", ".join(p.id for p in agreements.manufacturer.oos_pathways) or "none"
            raise InvalidFields(
                [("oos_pathway", f"unknown pathway {requested!r}; known: {known}", "unknown")]
            )
        return found
    if current is not None:
        return OosPathway.model_validate(current["definition"])
    live = (
        agreements.effective(snapshot.center_id)
        if snapshot.center_id in agreements.center_ids()
        else None
    )
    found = snapshot.oos_pathway or (live.oos_pathway if live else None)
    if found is None:
        known = ", ".join(p.id for p in agreements.manufacturer.oos_pathways) or "none"
        raise InvalidFields(
            [
                (
                    "oos_pathway",
                    f"center {snapshot.center_id!r} has no oos_pathway in its agreement: "
                    f"name one of {known}",
                    "missing",
                )
            ]
        )
    return found


def new_offer(
    pathway: OosPathway,
    source: DecisionSource,
    previous: dict[str, Any] | None,
    offered_at: datetime,
) -> dict[str, Any]:
    """What the incident keeps of an offer, with each item's gate, owner and due time; items
    confirmed for an earlier offer under the same pathway stay confirmed."""
    terms = pathway_gates.item_terms(pathway, offered_at)
    confirmed = {
        item["id"]: item
        for item in (previous or {}).get("items", [])
        if previous and previous["pathway"] == pathway.id and item["reference"]
    }
    return {
        "pathway": pathway.id,
        "name": pathway.name,
        "definition": pathway.model_dump(mode="json"),
        "items": [
            {
                **confirmed.get(
                    item.id,
                    {"id": item.id, "label": item.label, "reference": None, "confirmed_at": None},
                ),
                **terms[item.id],
            }
            for item in pathway.checklist
        ],
        "decision": source.rule.model_dump(mode="json"),
        "asked": [_stored(a) for a in source.asked],
        "deputies": [_stored(a) for a in source.deputies],
    }


def _stored(person: Addressee) -> dict[str, str]:
    return {
        "contact_id": person.contact_id,
        "role": person.role,
        "name": person.name,
        "email": person.email,
    }


def with_deputies_asked(offer: dict[str, Any], deputies: Sequence[Addressee]) -> dict[str, Any]:
    """The offer once its deputies were asked: they are among those asked, and not asked again."""
    return {
        **offer,
        "asked": [*offer["asked"], *(_stored(d) for d in deputies)],
        "deputies": [],
    }


def unknown_items(offer: dict[str, Any], items: Iterable[str]) -> list[tuple[int, str]]:
    """Each confirmation (by position) naming an item the offer's checklist does not have."""
    known = {item["id"] for item in offer["items"]}
    return [(index, item) for index, item in enumerate(items) if item not in known]


def confirm(
    offer: dict[str, Any], confirmations: Sequence[tuple[str, str]], now: datetime
) -> dict[str, Any]:
    """The offer with each ``(item, reference)`` confirmed now (a new reference replaces one)."""
    references = dict(confirmations)
    return {
        **offer,
        "items": [
            {**item, "reference": references[item["id"]], "confirmed_at": now.isoformat()}
            if item["id"] in references
            else item
            for item in offer["items"]
        ],
    }


def missing(offer: dict[str, Any] | None) -> list[str]:
    """The checklist items not yet confirmed."""
    return [item["id"] for item in (offer or {}).get("items", []) if not item["reference"]]


def stored_rule(offer: dict[str, Any]) -> DecisionRule:
    return DecisionRule.model_validate(offer["decision"])


def stored_asked(offer: dict[str, Any]) -> list[Addressee]:
    return [Addressee(**person) for person in offer["asked"]]


def stored_deputies(offer: dict[str, Any]) -> list[Addressee]:
    """The deputies not yet asked (none in offers made before deputies existed)."""
    return [Addressee(**person) for person in offer.get("deputies", [])]
