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


class ManufacturerRole(StrEnum):
    QA = "qa"
    ACCOUNT_LEAD = "account_lead"
    PATIENT_SERVICES = "patient_services"
    MEDICAL_AFFAIRS = "medical_affairs"
    SUPPLY_CHAIN = "supply_chain"


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


_ACK_LABELS = {
    AckResponse.RECEIVED: "Received — we are reviewing it",
    AckResponse.ACCEPT_OOS_PRODUCT: "Accept the out-of-specification product",
    AckResponse.REQUEST_REMANUFACTURE: "Request re-manufacture",
    AckResponse.DECLINE_PRODUCT: "Decline the product",
    AckResponse.CALL_ME: "Received — please call us",
}
