"""What an event may say about the product's state and the patient's indication, checked
against the incident it follows: a lot already infused is not cancelled, and an indication is
one the product's label has a window for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oos_notify.agreements.config import Agreements
from oos_notify.agreements.vocabulary import Disposition, ProductStatus
from oos_notify.store.models import Incident

if TYPE_CHECKING:
    from oos_notify.incidents.events import EventIn

INFUSED_NOT_CANCELLED = (
    "the product was already infused, so the lot cannot be cancelled: post a late_result event "
    "for a result out of specification, or a resolved event to close the incident"
)
CANCELLED_NOT_INFUSED = (
    "the lot is cancelled, so the product cannot be recorded as infused: if it was given, post "
    "a late_result event for its result, or a resolved event to close the incident"
)


def event_errors(
    event: EventIn, incident: Incident | None, agreements: Agreements
) -> list[tuple[str, str, str]]:
    """Fields of ``event`` that contradict the product's state once the event is applied."""
    errors: list[tuple[str, str, str]] = []
    disposition = event.disposition or (incident.disposition if incident else None)
    status = event.product_status or (incident.product_status if incident else None)
    if disposition == Disposition.CANCELLED and status == ProductStatus.INFUSED:
        if event.disposition is Disposition.CANCELLED:
            errors.append(("disposition", INFUSED_NOT_CANCELLED, "infused"))
        else:
            errors.append(("product_status", CANCELLED_NOT_INFUSED, "cancelled"))
    code = event.product_code or (incident.product_code if incident else None)
    product = agreements.product(code) if code else None
    if event.indication is not None and product is not None:
        known = product.indications()
        if not known:
            errors.append(
                (
                    "indication",
                    f"product {product.code!r} has no infusion windows by indication in the "
                    "manufacturer's config: leave indication out",
                    "unknown",
                )
            )
        elif event.indication not in known:
            errors.append(
                (
                    "indication",
                    f"{event.indication!r} is not an indication of product {product.code!r}; "
                    f"known: {', '.join(known)}",
                    "unknown",
                )
            )
    return errors
