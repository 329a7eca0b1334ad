"""The clinical facts a message states beside the incident's own: which of the label's infusion
windows applies, whether lymphodepletion has started, how long a shipper may hold the product,
and what each failed attribute means. Pure: the agreement, the incident's facts and the
center's date in, views out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from oos_notify.agreements.config import EffectiveAgreement, Product
from oos_notify.agreements.vocabulary import KeyDate, ProductStatus
from oos_notify.delivery.rendering import (
    GuidanceView,
    InfusionWindowView,
    ShipperHoldView,
    day,
    infusion_window_view,
    spoken,
)

IN_A_SHIPPER = frozenset({ProductStatus.SHIPPED, ProductStatus.AT_CENTER})
"""Where the product may be in its shipper: on its way, or received and not yet moved to the
cell lab's own storage."""


@dataclass(frozen=True)
class ClinicalFacts:
    """What ``clinical_facts`` adds to an incident's view."""

    infusion_window: InfusionWindowView | None
    infusion_windows: list[InfusionWindowView]
    lymphodepletion_started: str | None
    shipper_hold: ShipperHoldView | None
    guidance: list[GuidanceView]
    unguided: list[str]


def clinical_facts(
    agreement: EffectiveAgreement,
    product: Product | None,
    status: ProductStatus | None,
    indication: str | None,
    key_dates: Mapping[str, str],
    failed_attributes: Iterable[str],
    today: date,
) -> ClinicalFacts:
    """The facts for an incident in ``status`` on the center's ``today``: no window once the
    product is infused, every indication's window where the incident names none."""
    infused = status is ProductStatus.INFUSED
    dates = dict(key_dates)
    window = None
    windows: list[InfusionWindowView] = []
    if product is not None and not infused:
        window = infusion_window_view(product.window_for(indication), dates)
        if window is None:
            windows = [
                view
                for w in product.infusion_windows
                if (view := infusion_window_view(w, dates)) is not None
            ]
    started = dates.get(KeyDate.LYMPHODEPLETION_START.value)
    guidance: list[GuidanceView] = []
    unguided: list[str] = []
    for attribute in dict.fromkeys(failed_attributes):
        found = agreement.guidance(attribute)
        if found is None:
            unguided.append(attribute)
        elif all(g.attribute != found.attribute for g in guidance):
            guidance.append(
                GuidanceView(
                    attribute=found.attribute,
                    not_infused=found.not_infused,
                    infused=found.infused,
                    source=found.source,
                )
            )
    return ClinicalFacts(
        infusion_window=window,
        infusion_windows=windows,
        lymphodepletion_started=day(date.fromisoformat(started))
        if started and not infused and date.fromisoformat(started) <= today
        else None,
        shipper_hold=shipper_hold_view(product, status, dates),
        guidance=guidance,
        unguided=unguided,
    )


def shipper_hold_view(
    product: Product | None, status: ProductStatus | None, key_dates: Mapping[str, str]
) -> ShipperHoldView | None:
    """The shipper's hold time while the product may be in it, ending on the day its hold
    time counted from the shipment day runs out (the hour it shipped is not known, so the
    product is out of the shipper before that day starts)."""
    if product is None or product.shipper_hold is None or status not in IN_A_SHIPPER:
        return None
    shipped = key_dates.get(KeyDate.PRODUCT_SHIPMENT.value)
    days = product.shipper_hold.as_timedelta().days
    return ShipperHoldView(
        hold=spoken(product.shipper_hold),
        until=day(date.fromisoformat(shipped) + timedelta(days=days)) if shipped else None,
    )
