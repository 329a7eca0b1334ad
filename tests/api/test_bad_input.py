"""Bad input over real HTTP: every refusal is a clear 4xx, never a 500, and stores nothing.

Each test sends what a careless, confused or hostile client might send, then checks what a
manufacturer's integration relies on: the status code, a JSON ``detail`` that names the field, and
that the database and the SMTP server saw nothing of a refused request.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import Session, SQLModel, select

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.incidents.acknowledgement import AckTokens
from oos_notify.store import apikeys
from oos_notify.store.db import transaction
from oos_notify.store.models import Acknowledgement, AuditEntry, Event, Incident, Notification
from tests.conftest import RunningService, ack_link, received, release_failure

STORED_MODELS: tuple[type[SQLModel], ...] = (
    Event,
    Incident,
    Notification,
    AuditEntry,
    Acknowledgement,
)


# --- helpers --------------------------------------------------------------------------------------


def stored(service: RunningService) -> dict[str, int]:
    """How many rows each table the API writes holds, read straight from the SQLite file."""
    with Session(service.services.engine) as session:
        return {
            model.__name__: session.exec(select(func.count()).select_from(model)).one()
            for model in STORED_MODELS
        }


async def mail_count(service: RunningService, smtp: CaptureServer) -> int:
    """The emails the SMTP server accepted once the dispatcher has sent everything due."""
    await service.settle()
    return len(smtp.handler.messages())


async def post_raw(
    service: RunningService,
    content: bytes | str,
    content_type: str | None = "application/json",
) -> httpx.Response:
    headers = dict(service.auth)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await service.client.post("/v1/events", content=content, headers=headers)


def locs(response: httpx.Response) -> list[list[Any]]:
    detail = response.json()["detail"]
    assert isinstance(detail, list), detail
    return [error["loc"] for error in detail]


def names(response: httpx.Response, loc: list[Any]) -> bool:
    """Whether a 422 detail has an error at ``loc`` or inside it."""
    return any(found[: len(loc)] == loc for found in locs(response))


def follow_up(event_type: str, event_id: str, **overrides: Any) -> dict[str, Any]:
    """A follow-up event for the incident ``release_failure()`` opens."""
    event: dict[str, Any] = {
        "event_id": event_id,
        "type": event_type,
        "incident_ref": "OOS-2026-0142",
        "occurred_at": "2026-11-24T16:00:00Z",
        "center_id": "mercy-general-main",
    }
    event.update(overrides)
    return event


async def incident_detail(service: RunningService, incident_id: str) -> dict[str, Any]:
    response = await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


@dataclass
class Opened:
    """An incident opened by ``release_failure()``, its first emails sent."""

    incident_id: str
    answer: dict[str, Any]
    link: str
    token: str
    mails: int


@pytest.fixture
async def opened(service: RunningService, smtp: CaptureServer) -> Opened:
    answer = await service.post_event(release_failure())
    assert answer.status_code == 202, answer.text
    messages = await received(smtp, 3)
    coordinator = next(m for m in messages if m.recipients == ("ct-coord@mercy.example",))
    link = ack_link(coordinator)
    return Opened(
        answer.json()["incident_id"],
        answer.json(),
        link,
        link.rpartition("/ack/")[2],
        await mail_count(service, smtp),
    )


def assert_refused_page(page: httpx.Response, status: int) -> None:
    """A plain HTML page that says the request cannot be used, never a traceback."""
    assert page.status_code == status, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "Traceback" not in page.text and "Internal Server Error" not in page.text


async def assert_not_acknowledged(service: RunningService, incident_id: str) -> None:
    detail = await incident_detail(service, incident_id)
    assert detail["status"] in ("notifying", "escalated")
    assert detail["acknowledged_at"] is None and detail["acknowledgements"] == []
    assert stored(service)["Acknowledgement"] == 0


# --- bodies that are not an event at all ---------------------------------------------------------

VALID_JSON = json.dumps(release_failure())


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        pytest.param(b'{"event_id": "QA-1", "type":', "application/json", 422, id="truncated"),
        pytest.param(b"{'event_id': 'QA-1'}", "application/json", 422, id="single-quotes"),
        pytest.param(b"not json at all", "application/json", 422, id="prose"),
        pytest.param(b"[]", "application/json", 422, id="array"),
        pytest.param(json.dumps([release_failure()]), "application/json", 422, id="array-of-event"),
        pytest.param(b'"release_failure"', "application/json", 422, id="string"),
        pytest.param(b"42", "application/json", 422, id="number"),
        pytest.param(b"null", "application/json", 422, id="null"),
        pytest.param(b"", "application/json", 422, id="empty"),
        pytest.param(VALID_JSON, "text/plain", 422, id="text-plain"),
        pytest.param(VALID_JSON, None, 422, id="no-content-type"),
        pytest.param(
            b"event_id=QA-1&type=release_failure",
            "application/x-www-form-urlencoded",
            422,
            id="form-encoded",
        ),
        pytest.param(b'{"event_id": "\xff\xfe"}', "application/json", 400, id="invalid-utf8"),
        pytest.param(b"\xff\xfe\x00", "text/plain", 422, id="invalid-utf8-text-plain"),
        pytest.param(
            b'{"severity": 1' + b"1" * 5000 + b"}", "application/json", 400, id="5000-digit-number"
        ),
        pytest.param(b"[" * 20_000 + b"]" * 20_000, "application/json", 400, id="deep-nesting"),
    ],
)
async def test_a_body_that_is_not_an_event_object_is_refused_and_nothing_is_stored(
    service: RunningService,
    smtp: CaptureServer,
    content: bytes | str,
    content_type: str | None,
    status: int,
) -> None:
    # Given a fresh service
    before = stored(service)

    # When a client posts something that is not a JSON object of an event
    response = await post_raw(service, content, content_type)

    # Then it gets a JSON 4xx, and nothing is stored or sent
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"]
    if status == 422:
        assert all(loc[0] == "body" for loc in locs(response))
    assert stored(service) == before
    assert await mail_count(service, smtp) == 0


async def test_a_nan_severity_is_refused_with_422_not_500(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Python's json module reads the non-standard NaN token; the answer must still encode.
    before = stored(service)
    response = await post_raw(service, json.dumps(release_failure(severity=float("nan"))))
    assert response.status_code == 422, response.text
    assert locs(response) == [["body", "severity"]]
    assert stored(service) == before
    assert await mail_count(service, smtp) == 0


@pytest.mark.parametrize(
    ("event", "loc"),
    [
        pytest.param(
            release_failure(summary="Viability low \ud800"), ["body", "summary"], id="in-a-value"
        ),
        pytest.param(
            release_failure(patient_name="\udcff"),
            ["body", "patient_name"],
            id="in-an-unknown-field",
        ),
        pytest.param(
            release_failure(key_dates={"\ud800": "2026-12-01"}),
            ["body", "key_dates"],
            id="in-a-key",
        ),
    ],
)
async def test_a_lone_surrogate_is_refused_with_422_not_500(
    service: RunningService, smtp: CaptureServer, event: dict[str, Any], loc: list[str]
) -> None:
    # json.dumps escapes it as \ud800, which is valid JSON but not encodable text
    before = stored(service)
    response = await post_raw(service, json.dumps(event))
    assert response.status_code == 422, response.text
    assert names(response, loc)
    assert stored(service) == before
    assert await mail_count(service, smtp) == 0


# --- fields: missing, wrong type, unknown value, too long, not allowed ---------------------------


@pytest.mark.parametrize("field", ["event_id", "type", "incident_ref", "occurred_at", "center_id"])
async def test_a_missing_required_field_is_named_and_nothing_is_stored(
    service: RunningService, smtp: CaptureServer, field: str
) -> None:
    event = release_failure()
    del event[field]
    before = stored(service)

    response = await service.post_event(event)

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", field] and error["type"] == "missing"
    assert stored(service) == before
    assert await mail_count(service, smtp) == 0


NOT_ONE_MAILBOX = {
    "two-local-parts": "qa,evil@manufacturer.example",
    "two-addresses": "qa@manufacturer.example, evil@attacker.example",
    "semicolon-list": "qa@manufacturer.example;evil.example",
    "mailto-query": "qa@manufacturer.example?cc=evil%40attacker.example&body=Send%20the%20COI",
    "display-name": "A. Rivera <qa@manufacturer.example>",
    "group": "QA: qa@manufacturer.example;",
    "quoted-local-part": '"qa evil"@manufacturer.example',
    "ip-literal": "qa@[192.0.2.1]",
    "no-dot-in-domain": "qa@manufacturer",
    "non-ascii-local-part": "jörg@bücher.example",
    "line-break": "qa@manufacturer.example\r\nBcc: attacker@evil.example",
}
"""Addresses the old pattern let through (or might have): each must be refused as one field."""

NOT_ONE_LINE = {
    "crlf-bcc": "A. Rivera\r\nBcc: attacker@evil.example",
    "lf": "A. Rivera\nBcc: attacker@evil.example",
    "cr": "A. Rivera\rBcc: attacker@evil.example",
    "nel": "A. Rivera\x85Bcc: attacker@evil.example",
    "line-separator": "A. Rivera\u2028Bcc: attacker@evil.example",
    "paragraph-separator": "A. Rivera\u2029Bcc: attacker@evil.example",
    "nul": "A. Rivera\x00",
    "tab": "A.\tRivera",
    "escape": "A. Rivera\x1b[2J",
    "delete": "A. Rivera\x7f",
}
"""Names that would end a header line early, or smuggle a control character into one."""


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        pytest.param({"event_id": 123}, ["body", "event_id"], id="event_id-number"),
        pytest.param({"event_id": "QA EVT 1"}, ["body", "event_id"], id="event_id-spaces"),
        pytest.param({"event_id": "   "}, ["body", "event_id"], id="event_id-blank"),
        pytest.param({"event_id": "E" * 101}, ["body", "event_id"], id="event_id-101-chars"),
        pytest.param({"center_id": None}, ["body", "center_id"], id="center_id-null"),
        pytest.param({"incident_ref": "R" * 101}, ["body", "incident_ref"], id="ref-101-chars"),
        pytest.param({"type": "recall"}, ["body", "type"], id="type-unknown"),
        pytest.param({"type": "RELEASE_FAILURE"}, ["body", "type"], id="type-wrong-case"),
        pytest.param({"severity": 5}, ["body", "severity"], id="severity-number"),
        pytest.param({"severity": "catastrophic"}, ["body", "severity"], id="severity-unknown"),
        pytest.param(
            {"disposition": "destroyed"}, ["body", "disposition"], id="disposition-unknown"
        ),
        pytest.param(
            {"occurred_at": "2026-11-24T15:10:00"}, ["body", "occurred_at"], id="occurred_at-naive"
        ),
        pytest.param({"occurred_at": "yesterday"}, ["body", "occurred_at"], id="occurred_at-prose"),
        pytest.param(
            {"occurred_at": "0001-01-01T00:00:00+14:00"},
            ["body", "occurred_at"],
            id="occurred_at-before-year-1-in-utc",
        ),
        pytest.param(
            {"occurred_at": "9999-12-31T23:59:59-12:00"},
            ["body", "occurred_at"],
            id="occurred_at-after-year-9999-in-utc",
        ),
        pytest.param(
            {"failed_attributes": "x"}, ["body", "failed_attributes"], id="failed_attributes-string"
        ),
        pytest.param(
            {"failed_attributes": [{"attribute": "viability"}]},
            ["body", "failed_attributes", 0],
            id="failed_attribute-incomplete",
        ),
        pytest.param(
            {"failed_attributes": [{"attribute": "a" * 201, "specification": "s", "result": "r"}]},
            ["body", "failed_attributes", 0, "attribute"],
            id="failed_attribute-201-chars",
        ),
        pytest.param(
            {"failed_attributes": [{"attribute": "a", "specification": "s", "result": "r"}] * 51},
            ["body", "failed_attributes"],
            id="failed_attributes-51",
        ),
        pytest.param(
            {"chain_of_identity": "ab"}, ["body", "chain_of_identity"], id="coi-too-short"
        ),
        pytest.param(
            {"chain_of_identity": "COI 8K2M"}, ["body", "chain_of_identity"], id="coi-space"
        ),
        pytest.param(
            {"key_dates": {"birthday": "2026-12-01"}}, ["body", "key_dates"], id="key_date-unknown"
        ),
        pytest.param(
            {"key_dates": {"planned_infusion": "2026-02-30"}},
            ["body", "key_dates", "planned_infusion"],
            id="key_date-impossible",
        ),
        pytest.param({"key_dates": ["2026-12-01"]}, ["body", "key_dates"], id="key_dates-list"),
        pytest.param(
            {"key_dates": {"lymphodepletion_start": "0001-01-01"}},
            ["body", "key_dates", "lymphodepletion_start"],
            id="key_date-year-1",
        ),
        pytest.param(
            {"key_dates": {"planned_infusion": "9999-12-31"}},
            ["body", "key_dates", "planned_infusion"],
            id="key_date-year-9999",
        ),
        pytest.param({"summary": "s" * 4001}, ["body", "summary"], id="summary-4001-chars"),
        pytest.param(
            {"qa_contact": {"name": "A. Rivera", "email": "not-an-email"}},
            ["body", "qa_contact", "email"],
            id="qa_contact-email",
        ),
        pytest.param(
            {"qa_contact": {"name": "A. Rivera", "email": "qa@x.example", "phone": "call me"}},
            ["body", "qa_contact", "phone"],
            id="qa_contact-phone",
        ),
        *(
            pytest.param(
                {"qa_contact": {"name": "A. Rivera", "email": email}},
                ["body", "qa_contact", "email"],
                id=f"qa_contact-email-{case}",
            )
            for case, email in NOT_ONE_MAILBOX.items()
        ),
        *(
            pytest.param(
                {"qa_contact": {"name": name, "email": "qa@x.example"}},
                ["body", "qa_contact", "name"],
                id=f"qa_contact-name-{case}",
            )
            for case, name in NOT_ONE_LINE.items()
        ),
    ],
)
async def test_an_invalid_field_is_named_and_nothing_is_stored(
    service: RunningService, smtp: CaptureServer, overrides: dict[str, Any], loc: list[Any]
) -> None:
    before = stored(service)

    response = await service.post_event(release_failure(**overrides))

    assert response.status_code == 422, response.text
    assert names(response, loc), locs(response)
    assert stored(service) == before
    assert await mail_count(service, smtp) == 0


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        pytest.param({"patient_name": "Jane Doe"}, ["body", "patient_name"], id="patient_name"),
        pytest.param({"date_of_birth": "1970-01-01"}, ["body", "date_of_birth"], id="birth"),
        pytest.param({"patient": {"name": "Jane Doe"}}, ["body", "patient"], id="patient"),
        pytest.param(
            {
                "qa_contact": {
                    "name": "A. Rivera",
                    "email": "qa@x.example",
                    "patient_name": "Jane Doe",
                }
            },
            ["body", "qa_contact", "patient_name"],
            id="nested-patient_name",
        ),
        pytest.param(
            {
                "failed_attributes": [
                    {
                        "attribute": "viability",
                        "specification": "s",
                        "result": "r",
                        "patient_mrn": "12345",
                    }
                ]
            },
            ["body", "failed_attributes", 0, "patient_mrn"],
            id="nested-patient_mrn",
        ),
    ],
)
async def test_an_unknown_field_such_as_patient_data_is_refused_and_not_stored(
    service: RunningService, smtp: CaptureServer, overrides: dict[str, Any], loc: list[Any]
) -> None:
    # Only identifiers go in: a field the schema does not know could carry patient data
    before = stored(service)

    response = await service.post_event(release_failure(**overrides))

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == loc and error["type"] == "extra_forbidden"
    assert stored(service) == before
    assert await mail_count(service, smtp) == 0


async def test_every_invalid_field_is_named_at_once(
    service: RunningService, smtp: CaptureServer
) -> None:
    event = release_failure(
        type="bogus",
        occurred_at="2026-11-24T15:10:00",
        severity=5,
        failed_attributes="x",
        patient_name="Jane Doe",
        summary="s" * 4001,
    )
    del event["event_id"]

    response = await service.post_event(event)

    assert response.status_code == 422, response.text
    assert sorted(map(tuple, locs(response))) == sorted(
        ("body", field)
        for field in (
            "event_id",
            "type",
            "occurred_at",
            "severity",
            "failed_attributes",
            "patient_name",
            "summary",
        )
    )
    assert stored(service)["Event"] == 0
    assert await mail_count(service, smtp) == 0


# --- what an event type needs beyond the schema --------------------------------------------------


@pytest.mark.parametrize("event_type", ["release_failure", "late_result"])
@pytest.mark.parametrize(
    ("field", "missing_value"),
    [
        ("product_code", None),
        ("lot_number", None),
        ("chain_of_identity", None),
        ("failed_attributes", None),
        ("failed_attributes", []),
    ],
)
async def test_an_opening_event_without_what_identifies_the_lot_is_refused(
    service: RunningService,
    smtp: CaptureServer,
    event_type: str,
    field: str,
    missing_value: Any,
) -> None:
    event = release_failure(type=event_type)
    if missing_value is None:
        del event[field]
    else:
        event[field] = missing_value

    response = await service.post_event(event)

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", field]
    assert event_type in error["msg"]
    assert stored(service)["Incident"] == 0
    assert await mail_count(service, smtp) == 0


async def test_an_opening_event_names_all_its_missing_fields_together(
    service: RunningService,
) -> None:
    event = release_failure(failed_attributes=[])
    del event["lot_number"], event["chain_of_identity"]

    response = await service.post_event(event)

    assert response.status_code == 422, response.text
    assert sorted(map(tuple, locs(response))) == [
        ("body", "chain_of_identity"),
        ("body", "failed_attributes"),
        ("body", "lot_number"),
    ]


@pytest.mark.parametrize("disposition", [None, "under_investigation"])
async def test_a_disposition_event_without_a_decision_is_refused(
    service: RunningService, smtp: CaptureServer, opened: Opened, disposition: str | None
) -> None:
    # Given an open incident
    before, incident = stored(service), await incident_detail(service, opened.incident_id)

    # When the manufacturer sends a disposition event that does not say what was decided
    event = follow_up("disposition", "QA-EVT-2026-000200")
    if disposition is not None:
        event["disposition"] = disposition
    response = await service.post_event(event)

    # Then it is told to choose one, and the incident is unchanged
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "disposition"] and "remanufacture" in error["msg"]
    assert stored(service) == before
    assert await incident_detail(service, opened.incident_id) == incident
    assert await mail_count(service, smtp) == opened.mails


# --- references to things the service does not know ---------------------------------------------


async def test_unknown_center_is_refused_and_nothing_is_stored(
    service: RunningService, smtp: CaptureServer
) -> None:
    response = await service.post_event(release_failure(center_id="st-elsewhere"))

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "center_id"] and "st-elsewhere" in error["msg"]
    assert stored(service)["Incident"] == stored(service)["Event"] == 0
    assert await mail_count(service, smtp) == 0


async def test_unknown_product_is_refused_and_nothing_is_stored(
    service: RunningService, smtp: CaptureServer
) -> None:
    response = await service.post_event(release_failure(product_code="NOPE"))

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "product_code"] and "NOPE" in error["msg"]
    assert stored(service)["Incident"] == stored(service)["Event"] == 0
    assert await mail_count(service, smtp) == 0


async def test_unknown_center_and_product_are_both_named(service: RunningService) -> None:
    response = await service.post_event(
        release_failure(center_id="st-elsewhere", product_code="NOPE")
    )

    assert response.status_code == 422, response.text
    assert sorted(map(tuple, locs(response))) == [("body", "center_id"), ("body", "product_code")]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"type": "update", "summary": "New facts"}, id="update"),
        pytest.param({"type": "disposition", "disposition": "remanufacture"}, id="disposition"),
        pytest.param({"type": "resolved"}, id="resolved"),
        pytest.param({"type": "withdrawn"}, id="withdrawn"),
    ],
)
async def test_a_follow_up_for_an_unknown_incident_is_refused(
    service: RunningService, smtp: CaptureServer, extra: dict[str, Any]
) -> None:
    event = follow_up(extra.pop("type"), "QA-EVT-2026-000300", incident_ref="OOS-UNKNOWN-1")
    event.update(extra)
    before = stored(service)

    response = await service.post_event(event)

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "incident_ref"] and "OOS-UNKNOWN-1" in error["msg"]
    assert stored(service) == before
    assert await mail_count(service, smtp) == 0


# --- events that make no sense for the incident (409) --------------------------------------------


async def assert_conflict_changed_nothing(
    service: RunningService,
    smtp: CaptureServer,
    response: httpx.Response,
    before: dict[str, int],
    incident: dict[str, Any],
    mails: int,
) -> None:
    assert response.status_code == 409, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "OOS-2026-0142" in detail
    assert stored(service) == before
    assert await incident_detail(service, incident["incident_id"]) == incident
    assert await mail_count(service, smtp) == mails


async def test_a_follow_up_from_another_center_is_a_conflict(
    service: RunningService, smtp: CaptureServer, opened: Opened
) -> None:
    # Given an incident at Mercy General, and a center that exists but is not the incident's
    before, incident = stored(service), await incident_detail(service, opened.incident_id)

    response = await service.post_event(
        follow_up("update", "QA-EVT-2026-000400", center_id="mercy-west", summary="Moved?")
    )

    await assert_conflict_changed_nothing(service, smtp, response, before, incident, opened.mails)
    assert "mercy-west" in response.json()["detail"]


async def test_a_second_release_failure_for_an_open_incident_is_a_conflict(
    service: RunningService, smtp: CaptureServer, opened: Opened
) -> None:
    before, incident = stored(service), await incident_detail(service, opened.incident_id)

    response = await service.post_event(
        release_failure(event_id="QA-EVT-2026-000401", lot_number="LOT-24-9999")
    )

    await assert_conflict_changed_nothing(service, smtp, response, before, incident, opened.mails)


LATE_STERILITY = {
    "type": "late_result",
    "product_code": "CARTX",
    "lot_number": "LOT-24-1187",
    "chain_of_identity": "COI-8K2M-4471",
    "failed_attributes": [
        {"attribute": "sterility", "specification": "no growth", "result": "growth"}
    ],
}
"""A late result: it reopens a resolved incident (tests/test_clinical.py), not a withdrawn one."""


@pytest.mark.parametrize(
    ("closing", "next_event"),
    [
        *(
            pytest.param(closing, event, id=f"{event['type']}-{closing}")
            for closing in ("resolved", "withdrawn")
            for event in (
                {"type": "update", "summary": "New facts"},
                {"type": "disposition", "disposition": "cancelled"},
                {"type": "resolved"},
                {"type": "withdrawn"},
            )
        ),
        pytest.param("withdrawn", LATE_STERILITY, id="late_result-withdrawn"),
    ],
)
async def test_any_event_after_the_incident_is_closed_is_a_conflict(
    service: RunningService,
    smtp: CaptureServer,
    opened: Opened,
    closing: str,
    next_event: dict[str, Any],
) -> None:
    # Given an incident the manufacturer closed, and everyone told has heard it is closed
    closed = await service.post_event(follow_up(closing, "QA-EVT-2026-000500"))
    assert closed.status_code == 202, closed.text
    await service.settle()
    mails = await mail_count(service, smtp)
    assert mails == opened.mails * 2  # each recipient of the first notice got the closing one
    before, incident = stored(service), await incident_detail(service, opened.incident_id)
    assert incident["status"] == closing

    # When another event arrives for it
    event = follow_up(next_event["type"], "QA-EVT-2026-000501")
    event.update({k: v for k, v in next_event.items() if k != "type"})
    response = await service.post_event(event)

    # Then it is refused and the closed incident stays as it was
    await assert_conflict_changed_nothing(service, smtp, response, before, incident, mails)
    assert closing in response.json()["detail"]


# --- idempotency on event_id ---------------------------------------------------------------------


async def test_the_same_event_again_is_a_duplicate_that_schedules_nothing(
    service: RunningService, smtp: CaptureServer, opened: Opened
) -> None:
    # Given an event that was accepted and whose first emails went out
    before = stored(service)

    # When the QA system sends it again (a retry after a timeout, say)
    again = await service.post_event(release_failure())

    # Then it gets the first answer, marked duplicate, and nothing new is scheduled or sent
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["duplicate"] is True
    assert body["incident_id"] == opened.incident_id
    assert body["event_id"] == "QA-EVT-2026-000123"
    assert body["scheduled"] == opened.answer["scheduled"] != []
    assert {k: v for k, v in body.items() if k != "duplicate"} == {
        k: v for k, v in opened.answer.items() if k != "duplicate"
    }
    assert stored(service) == before
    assert await mail_count(service, smtp) == opened.mails


async def test_the_same_event_with_other_key_order_and_spacing_is_still_a_duplicate(
    service: RunningService, smtp: CaptureServer, opened: Opened
) -> None:
    before = stored(service)
    reordered = dict(reversed(list(release_failure().items())))
    reordered["qa_contact"] = dict(reversed(list(reordered["qa_contact"].items())))
    content = json.dumps(reordered, indent=4, separators=(" ,  ", " :\t"))
    assert content != json.dumps(release_failure())

    response = await post_raw(service, "\n\n  " + content + "\r\n")

    assert response.status_code == 200, response.text
    assert response.json()["duplicate"] is True
    assert response.json()["incident_id"] == opened.incident_id
    assert stored(service) == before
    assert await mail_count(service, smtp) == opened.mails


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param({"summary": "A different summary"}, id="summary"),
        pytest.param({"severity": "critical"}, id="severity"),
        pytest.param({"occurred_at": "2026-11-24T15:11:00Z"}, id="occurred_at"),
        pytest.param({"incident_ref": "OOS-2026-0999"}, id="another-incident"),
        pytest.param({"severity": None}, id="explicit-null"),
    ],
)
async def test_the_same_event_id_with_a_different_body_is_a_conflict_that_changes_nothing(
    service: RunningService, smtp: CaptureServer, opened: Opened, changed: dict[str, Any]
) -> None:
    before, incident = stored(service), await incident_detail(service, opened.incident_id)

    response = await service.post_event(release_failure(**changed))

    assert response.status_code == 409, response.text
    assert "QA-EVT-2026-000123" in response.json()["detail"]
    assert stored(service) == before
    assert await incident_detail(service, opened.incident_id) == incident
    listing = await service.client.get("/v1/incidents", headers=service.auth)
    assert [i["incident_id"] for i in listing.json()["items"]] == [opened.incident_id]
    assert await mail_count(service, smtp) == opened.mails


# --- API keys ------------------------------------------------------------------------------------


def bad_authorizations(real_key: str) -> dict[str, dict[str, str]]:
    tampered = real_key[:-4] + ("AAAA" if not real_key.endswith("AAAA") else "BBBB")
    basic = base64.b64encode(f"user:{real_key}".encode()).decode()
    return {
        "missing": {},
        "empty": {"Authorization": ""},
        "no-scheme": {"Authorization": real_key},
        "basic-scheme": {"Authorization": f"Basic {basic}"},
        "token-scheme": {"Authorization": f"Token {real_key}"},
        "bearer-without-key": {"Authorization": "Bearer"},
        "unknown-key": {"Authorization": "Bearer oosk_0123456789_" + "x" * 43},
        "right-prefix-wrong-secret": {"Authorization": f"Bearer {tampered}"},
        "garbage": {"Authorization": "Bearer ;DROP TABLE api_keys;--"},
        "overlong": {"Authorization": "Bearer oosk_" + "a" * 5000},
    }


AUTH_CASES = list(bad_authorizations("oosk_placeholder_x"))


async def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("case", AUTH_CASES)
async def test_an_event_without_a_valid_api_key_is_refused_and_not_stored(
    service: RunningService, smtp: CaptureServer, case: str
) -> None:
    headers = bad_authorizations(service.api_key)[case]
    before = stored(service)

    response = await service.client.post("/v1/events", json=release_failure(), headers=headers)

    await assert_unauthorized(response)
    assert stored(service) == before
    assert await mail_count(service, smtp) == 0


@pytest.mark.parametrize("case", AUTH_CASES)
async def test_incidents_cannot_be_read_without_a_valid_api_key(
    service: RunningService, opened: Opened, case: str
) -> None:
    headers = bad_authorizations(service.api_key)[case]
    for path in (
        "/v1/incidents",
        f"/v1/incidents/{opened.incident_id}",
        f"/v1/incidents/{opened.incident_id}/timeline",
    ):
        response = await service.client.get(path, headers=headers)
        await assert_unauthorized(response)
        assert opened.incident_id not in response.text


async def test_a_revoked_key_is_refused_everywhere(
    service: RunningService, smtp: CaptureServer, clock: ManualClock, opened: Opened
) -> None:
    # Given the QA system's key, revoked by the operator
    with transaction(service.services.engine) as session:
        apikeys.revoke(session, "test-qa-system", clock.now())
    before = stored(service)

    # When the QA system keeps using it, once the API has had the time it takes to recheck a
    # key it had just used
    clock.advance(apikeys.RECHECK_AFTER)
    posted = await service.post_event(release_failure(event_id="QA-EVT-2026-000600"))
    listed = await service.client.get("/v1/incidents", headers=service.auth)
    shown = await service.client.get(f"/v1/incidents/{opened.incident_id}", headers=service.auth)

    # Then every request is refused and the event is not stored
    for response in (posted, listed, shown):
        await assert_unauthorized(response)
    assert stored(service) == before
    assert await mail_count(service, smtp) == opened.mails


# --- request size --------------------------------------------------------------------------------


def oversized_event(service: RunningService) -> bytes:
    limit = service.services.settings.max_request_bytes
    content = json.dumps(release_failure(summary="s" * limit)).encode()
    assert len(content) > limit
    return content


async def test_an_oversized_body_with_content_length_is_refused_with_413(
    service: RunningService, smtp: CaptureServer
) -> None:
    before = stored(service)

    response = await post_raw(service, oversized_event(service))

    assert response.status_code == 413, response.text
    assert str(service.services.settings.max_request_bytes) in response.json()["detail"]
    assert stored(service) == before
    assert await mail_count(service, smtp) == 0


async def test_an_oversized_chunked_body_is_refused_with_413(
    service: RunningService, smtp: CaptureServer
) -> None:
    content = oversized_event(service)
    before = stored(service)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(content), 4096):
            yield content[start : start + 4096]

    # When the body streams in without a Content-Length
    response = await service.client.post(
        "/v1/events",
        content=chunks(),
        headers={**service.auth, "Content-Type": "application/json"},
    )

    # Then it is cut off with 413, and the server keeps serving
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert stored(service) == before
    assert await mail_count(service, smtp) == 0
    after = await service.client.get("/v1/incidents", headers=service.auth)
    assert after.status_code == 200 and after.json()["items"] == []


# --- acknowledgement links -----------------------------------------------------------------------


def flip(token: str, index: int) -> str:
    replacement = "A" if token[index] != "A" else "B"
    return token[:index] + replacement + token[index + 1 :]


async def test_a_tampered_token_is_refused_and_does_not_acknowledge(
    service: RunningService, opened: Opened
) -> None:
    payload_end = opened.token.rindex(".")
    for tampered in (
        flip(opened.token, 3),  # in the signed claims
        flip(opened.token, payload_end + 5),  # in the signature
        opened.token[:-1],
        opened.token + "A",
        opened.token.replace(".", "", 1),
    ):
        link = opened.link.replace(opened.token, tampered)
        assert_refused_page(await service.client.get(link), 400)
        assert_refused_page(await service.client.post(link, data={"response": "received"}), 400)
    await assert_not_acknowledged(service, opened.incident_id)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("not-a-token", id="random"),
        pytest.param("eyJuIjoibnRmX3gifQ.AAAAAAAAAAAAAAAAAAAAAAAAAAA", id="signature-shaped"),
        pytest.param("A" * 5000, id="5000-chars"),
        pytest.param("." * 20, id="dots"),
    ],
)
async def test_a_made_up_token_gets_a_plain_page_not_a_500(
    service: RunningService, opened: Opened, token: str
) -> None:
    link = f"/ack/{token}"
    assert_refused_page(await service.client.get(link), 400)
    assert_refused_page(await service.client.post(link, data={"response": "received"}), 400)
    await assert_not_acknowledged(service, opened.incident_id)


def coordinator_notification(service: RunningService, incident_id: str) -> Notification:
    with Session(service.services.engine) as session:
        return session.exec(
            select(Notification).where(
                Notification.incident_id == incident_id,
                Notification.recipient_email == "ct-coord@mercy.example",
            )
        ).one()


async def test_a_token_signed_with_another_key_is_refused(
    service: RunningService, clock: ManualClock, opened: Opened
) -> None:
    # Given a well-formed token for the real notification, signed with someone else's key
    notification = coordinator_notification(service, opened.incident_id)
    forged = AckTokens("an-attackers-guess").issue(notification, clock.now() + timedelta(days=14))

    # Then the link is refused for viewing and for confirming
    assert_refused_page(await service.client.get(f"/ack/{forged}"), 400)
    posted = await service.client.post(f"/ack/{forged}", data={"response": "received"})
    assert_refused_page(posted, 400)
    await assert_not_acknowledged(service, opened.incident_id)


@pytest.mark.parametrize(
    "moved",
    [
        pytest.param({"contact_id": "mgm-md"}, id="another-recipient"),
        pytest.param({"incident_id": "inc_someone_else"}, id="another-incident"),
        pytest.param({"id": "ntf_does_not_exist"}, id="unknown-notification"),
    ],
)
async def test_signed_claims_that_do_not_match_the_notification_are_refused(
    service: RunningService, clock: ManualClock, opened: Opened, moved: dict[str, str]
) -> None:
    real = coordinator_notification(service, opened.incident_id)
    claims = Notification.model_validate({**real.model_dump(), **moved})
    token = service.services.tokens.issue(claims, clock.now() + timedelta(days=14))

    assert_refused_page(await service.client.get(f"/ack/{token}"), 404)
    assert_refused_page(await service.client.post(f"/ack/{token}"), 404)
    await assert_not_acknowledged(service, opened.incident_id)


async def test_an_expired_link_is_refused_and_does_not_acknowledge(
    service: RunningService, clock: ManualClock, opened: Opened
) -> None:
    # Given the coordinator's link, valid for 14 days
    assert (await service.client.get(opened.link)).status_code == 200

    # When more than 14 days have passed
    clock.advance(timedelta(days=14, seconds=1))

    # Then opening and confirming say the link has expired
    shown = await service.client.get(opened.link)
    assert_refused_page(shown, 410)
    assert "expired" in shown.text
    assert_refused_page(await service.client.post(opened.link, data={"response": "received"}), 410)
    await assert_not_acknowledged(service, opened.incident_id)


@pytest.mark.parametrize(
    ("form", "status"),
    [
        pytest.param({"response": "bogus"}, 422, id="unknown-choice"),
        pytest.param({"response": "accept_oos_product"}, 422, id="choice-not-offered"),
        pytest.param({"response": "received", "comment": "c" * 2001}, 422, id="long-comment"),
        pytest.param({"response": "received", "comment": "c" * 20_000}, 422, id="huge-comment"),
        pytest.param({"response": "r" * 500}, 422, id="huge-choice"),
    ],
)
async def test_an_invalid_answer_on_the_page_does_not_acknowledge(
    service: RunningService, opened: Opened, form: dict[str, str], status: int
) -> None:
    # The incident is under investigation: accepting an OOS product is not one of its choices
    page = await service.client.post(opened.link, data=form)

    assert_refused_page(page, status)
    await assert_not_acknowledged(service, opened.incident_id)
    # And the link still works for a valid answer afterwards
    confirmed = await service.client.post(opened.link, data={"response": "received"})
    assert confirmed.status_code == 200
    assert (await incident_detail(service, opened.incident_id))["status"] == "acknowledged"


# --- the incidents API ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/timeline"])
async def test_an_unknown_incident_is_404(
    service: RunningService, opened: Opened, suffix: str
) -> None:
    response = await service.client.get(
        f"/v1/incidents/inc_does_not_exist{suffix}", headers=service.auth
    )

    assert response.status_code == 404, response.text
    assert "inc_does_not_exist" in response.json()["detail"]


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"limit": "0"}, "limit", id="limit-0"),
        pytest.param({"limit": "-1"}, "limit", id="limit-negative"),
        pytest.param({"limit": "1000"}, "limit", id="limit-1000"),
        pytest.param({"limit": "ten"}, "limit", id="limit-word"),
        pytest.param({"status": "bogus"}, "status", id="status-bogus"),
        pytest.param({"since": "not-a-date"}, "since", id="since-prose"),
        pytest.param({"since": "2026-11-24T00:00:00"}, "since", id="since-naive"),
        pytest.param({"since": "9999-12-31T23:59:59-12:00"}, "since", id="since-out-of-range"),
        pytest.param({"center_id": "c" * 101}, "center_id", id="center-101-chars"),
        pytest.param({"cursor": "garbage"}, "cursor", id="cursor-garbage"),
        pytest.param({"cursor": "c" * 401}, "cursor", id="cursor-401-chars"),
        pytest.param({"cursor": cursor_of("2026-11-24|x|y")}, "cursor", id="cursor-three-parts"),
        pytest.param(
            {"cursor": cursor_of("2026-11-24T00:00:00|inc_x")}, "cursor", id="cursor-naive-time"
        ),
        pytest.param(
            {"cursor": cursor_of("9999-12-31T23:59:59-12:00|inc_x")},
            "cursor",
            id="cursor-out-of-range",
        ),
        pytest.param(
            {"cursor": base64.urlsafe_b64encode(b"\xff\xfe|x").decode()},
            "cursor",
            id="cursor-not-utf8",
        ),
    ],
)
async def test_a_bad_incident_query_is_422_naming_the_parameter(
    service: RunningService, opened: Opened, params: dict[str, str], field: str
) -> None:
    response = await service.client.get("/v1/incidents", params=params, headers=service.auth)

    assert response.status_code == 422, response.text
    assert locs(response) == [["query", field]]
