"""The closed vocabularies shared by events, agreements and templates: one place defines each."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    RELEASE_FAILURE = "release_failure"
    LATE_RESULT = "late_result"
    DISPOSITION = "disposition"
    UPDATE = "update"
    RESOLVED = "resolved"
    WITHDRAWN = "withdrawn"


OPENING_EVENT_TYPES = frozenset({EventType.RELEASE_FAILURE, EventType.LATE_RESULT})
"""Event types that open an incident; every other type follows up an open one."""


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"


SEVERITY_ORDER = (Severity.CRITICAL, Severity.MAJOR, Severity.MINOR)
"""Most severe first."""


class Disposition(StrEnum):
    UNDER_INVESTIGATION = "under_investigation"
    REMANUFACTURE = "remanufacture"
    OOS_RELEASE_OFFERED = "oos_release_offered"
    CANCELLED = "cancelled"
    RELEASED_WITHIN_SPEC = "released_within_spec"


class KeyDate(StrEnum):
    APHERESIS = "apheresis"
    LYMPHODEPLETION_START = "lymphodepletion_start"
    LYMPHODEPLETION_END = "lymphodepletion_end"
    PLANNED_INFUSION = "planned_infusion"
    PRODUCT_SHIPMENT = "product_shipment"


class CenterRole(StrEnum):
    COORDINATOR = "coordinator"
    COORDINATOR_BACKUP = "coordinator_backup"
    PHYSICIAN = "physician"
    CELL_LAB = "cell_lab"
    PHARMACY = "pharmacy"
    PHARMACY_DIRECTOR = "pharmacy_director"
    PROGRAM_DIRECTOR = "program_director"
    APHERESIS_UNIT = "apheresis_unit"
    QUALITY = "quality"
    PATIENT_LIAISON = "patient_liaison"

    @property
    def label(self) -> str:
        """How a message names the role to a clinician."""
        return _ROLE_LABELS[self]


_ROLE_LABELS = {
    CenterRole.COORDINATOR: "cell therapy coordinator",
    CenterRole.COORDINATOR_BACKUP: "backup coordinator",
    CenterRole.PHYSICIAN: "treating physician",
    CenterRole.CELL_LAB: "cell processing laboratory",
    CenterRole.PHARMACY: "pharmacy",
    CenterRole.PHARMACY_DIRECTOR: "pharmacy director",
    CenterRole.PROGRAM_DIRECTOR: "program director",
    CenterRole.APHERESIS_UNIT: "apheresis unit",
    CenterRole.QUALITY: "quality",
    CenterRole.PATIENT_LIAISON: "patient liaison",
}


BACKUP_ROLES: dict[str, str] = {CenterRole.COORDINATOR: CenterRole.COORDINATOR_BACKUP}
"""Who stands in for a role whose holder cannot be reached by email: a notice to the role that
bounced or was refused brings its backup's notice forward."""


class ManufacturerRole(StrEnum):
    QA = "qa"
    ACCOUNT_LEAD = "account_lead"
    PATIENT_SERVICES = "patient_services"
    MEDICAL_AFFAIRS = "medical_affairs"
    SUPPLY_CHAIN = "supply_chain"
    REGULATORY_AFFAIRS = "regulatory_affairs"


class ProductStatus(StrEnum):
    """Where the product is when an event is sent: what the center must do depends on it."""

    IN_MANUFACTURING = "in_manufacturing"
    SHIPPED = "shipped"
    AT_CENTER = "at_center"
    INFUSED = "infused"

    @property
    def label(self) -> str:
        return _PRODUCT_STATUS_LABELS[self]


_PRODUCT_STATUS_LABELS = {
    ProductStatus.IN_MANUFACTURING: "in manufacturing",
    ProductStatus.SHIPPED: "shipped, not yet received by the center",
    ProductStatus.AT_CENTER: "at the center, not infused",
    ProductStatus.INFUSED: "infused",
}


class Transition(StrEnum):
    """A step in the incident's life that a pathway's checklist may gate or a regulatory clock
    may start from."""

    OPENED = "opened"
    """The manufacturer learned of the failure: the incident opened (a clock's "discovery")."""
    SHIPPED = "shipped"
    INFUSED = "infused"
    RESOLVED = "resolved"


GATED_TRANSITIONS = (Transition.SHIPPED, Transition.INFUSED, Transition.RESOLVED)
"""The transitions a checklist item may gate: recording one with the item open is refused."""


def transitions_reached(status: ProductStatus | None) -> frozenset[Transition]:
    """The product transitions a state has passed: a product at the center has been shipped,
    an infused one shipped and infused."""
    if status in (ProductStatus.SHIPPED, ProductStatus.AT_CENTER):
        return frozenset({Transition.SHIPPED})
    if status is ProductStatus.INFUSED:
        return frozenset({Transition.SHIPPED, Transition.INFUSED})
    return frozenset()


MANUFACTURER_PREFIX = "manufacturer:"
"""How a plan names a manufacturer role: ``manufacturer:account_lead``."""


class AckResponse(StrEnum):
    """What a center contact can answer on the acknowledgement page."""

    RECEIVED = "received"
    ACCEPT_OOS_PRODUCT = "accept_oos_product"
    REQUEST_REMANUFACTURE = "request_remanufacture"
    DECLINE_PRODUCT = "decline_product"
    CALL_ME = "call_me"

    @property
    def label(self) -> str:
        return _ACK_LABELS[self]

    @property
    def is_decision(self) -> bool:
        """An answer that decides what happens to an offered product (and is signed)."""
        return self in _DECISION_MEANINGS

    @property
    def meaning(self) -> str:
        """What a decider signs with this answer (21 CFR 11.50: the meaning of the signature)."""
        return _DECISION_MEANINGS[self]


_DECISION_MEANINGS = {
    AckResponse.ACCEPT_OOS_PRODUCT: "accept use of the out-of-specification product for this "
    "patient",
    AckResponse.REQUEST_REMANUFACTURE: "request re-manufacture instead of using the "
    "out-of-specification product for this patient",
    AckResponse.DECLINE_PRODUCT: "decline the out-of-specification product for this patient",
}

_ACK_LABELS = {
    AckResponse.RECEIVED: "Received — we are reviewing it",
    AckResponse.ACCEPT_OOS_PRODUCT: "Accept the out-of-specification product",
    AckResponse.REQUEST_REMANUFACTURE: "Request re-manufacture",
    AckResponse.DECLINE_PRODUCT: "Decline the product",
    AckResponse.CALL_ME: "Received — please call us",
}
