"""The incident page's forms post what the API posts (pathway, checklist items, where the product
is, re-manufacture facts, within-spec basis) through its own ingest: the same gates, the same
refusals naming the field, nothing recorded when refused, and a viewer refused outright."""

from __future__ import annotations

from typing import Any

import httpx
from sqlmodel import Session, col, select

from oos_notify.delivery.capture import CaptureServer
from oos_notify.store.models import Event, Incident
from tests.conftest import RunningService, received, release_failure
from tests.console.conftest import People, browser, csrf_token, sign_in
from tests.console.test_follow_ups import confirmed_form, opened, post

SHIPPING_ITEMS = {
    "checklist_risk_assessment": "RA-2026-0142",
    "checklist_physician_request": "PR-2026-0142",
    "checklist_expanded_access": "IND-123456",
}
"""The us-expanded-access items that gate shipment (config/manufacturer.yaml)."""


def event_types(service: RunningService) -> list[str]:
    """The types of the events recorded, by name (the test clock gives them one instant)."""
    with Session(service.services.engine) as session:
        return list(session.exec(select(Event.type).order_by(col(Event.type))))


def incident_row(service: RunningService, incident_id: str) -> Incident:
    with Session(service.services.engine) as session:
        found = session.get(Incident, incident_id)
        assert found is not None
        return found


async def dispose(
    client: httpx.AsyncClient, incident_id: str, **fields: Any
) -> tuple[httpx.Response, httpx.Response]:
    """Post a disposition form, then confirm it on the step that shows what it records."""
    review = await post(client, incident_id, type="disposition", **fields)
    assert review.status_code == 200, review.text
    done = await client.post(
        f"/console/incidents/{incident_id}/events", data=confirmed_form(review)
    )
    return review, done


async def test_an_empty_disposition_is_refused_and_nothing_is_recorded(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await opened(service, smtp)
    async with browser(service) as client:
        await sign_in(client, people.qa)
        page = await client.get(f"/console/incidents/{incident_id}")
        assert '<option value="">Choose…</option>' in page.text
        assert " selected>" not in page.text.split('id="disposition"')[1].split("</select>")[0]
        for confirmed in ("", "1"):
            refused = await post(
                client, incident_id, type="disposition", disposition="", confirmed=confirmed
            )
            assert refused.status_code == 422
            assert "disposition: a disposition event says which one" in refused.text
    assert event_types(service) == ["release_failure"]
    assert incident_row(service, incident_id).disposition == "under_investigation"


async def test_a_checklist_item_confirmed_from_the_console_gates_as_the_api_does(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await opened(service, smtp)
    async with browser(service) as client:
        await sign_in(client, people.qa)
        review, done = await dispose(
            client, incident_id, disposition="oos_release_offered", oos_pathway="us-expanded-access"
        )
        assert "US: single-patient expanded access (IND, 21 CFR 312.310)" in review.text
        assert done.status_code == 303
        # Shipping before the items that gate it are on file is refused, naming them
        early = await post(client, incident_id, type="update", product_status="shipped")
        assert early.status_code == 409
        assert "cannot be recorded as shipped" in early.text
        assert "physician_request (Treating physician&#39;s signed request form" in early.text
        assert incident_row(service, incident_id).product_status is None
        # QA confirms them from the checklist form, and then shipping is recorded
        items = await post(client, incident_id, type="update", **SHIPPING_ITEMS)
        assert items.status_code == 303
        page = await client.get(f"/console/incidents/{incident_id}")
        assert "<strong>IND-123456</strong>, confirmed" in page.text
        assert (
            'Asked to decide: <bdi title="ct-md@mercy.example">Dr. Lena Ortiz, CAR-T attending'
            in page.text
        )
        shipped = await post(client, incident_id, type="update", product_status="shipped")
        assert shipped.status_code == 303
    assert incident_row(service, incident_id).product_status == "shipped"
    assert event_types(service) == ["disposition", "release_failure", "update", "update"]


async def test_within_spec_basis_and_re_manufacture_facts_are_recorded_from_the_console(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await opened(service, smtp)
    async with browser(service) as client:
        await sign_in(client, people.qa)
        review, done = await dispose(
            client,
            incident_id,
            disposition="remanufacture",
            new_apheresis_needed="no",
            bridging_therapy_needed="unknown",
            expected_release="2026-12-20",
        )
        assert "Re-manufacture: new apheresis needed</dt><dd>no" in review.text
        assert done.status_code == 303
        more = await post(client, incident_id, type="update", bridging_therapy_needed="yes")
        assert more.status_code == 303
    assert incident_row(service, incident_id).remanufacture == {
        "new_apheresis_needed": False,
        "expected_release": "2026-12-20",
        "bridging_therapy_needed": True,
    }

    second = await opened_again(service, smtp)
    async with browser(service) as client:
        await sign_in(client, people.qa)
        _, done = await dispose(
            client,
            second,
            disposition="released_within_spec",
            assignable_cause="Analyst error in the viability assay; retest within specification.",
            certificate_of_analysis="COA-24-1187-R1",
        )
        assert done.status_code == 303
    assert incident_row(service, second).within_spec_basis == {
        "assignable_cause": "Analyst error in the viability assay; retest within specification.",
        "certificate_of_analysis": "COA-24-1187-R1",
    }


async def opened_again(service: RunningService, smtp: CaptureServer) -> str:
    answer = await service.post_event(
        release_failure(event_id="QA-EVT-2026-000999", incident_ref="OOS-2026-0999")
    )
    await service.settle()
    await received(smtp, 1)
    return str(answer.json()["incident_id"])


async def test_malformed_oversized_and_hostile_forms_are_refused_and_record_nothing(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await opened(service, smtp)
    async with browser(service) as client:
        await sign_in(client, people.qa)
        _, done = await dispose(client, incident_id, disposition="oos_release_offered")
        assert done.status_code == 303
        before = event_types(service)
        refusals = [
            ({"checklist_no_such_item": "X-1"}, "is not on the us-expanded-access checklist"),
            ({"checklist_risk_assessment": "R" * 101}, "oos_checklist.0.reference"),
            ({"checklist_risk_assessment": "<script>alert(1)</script>"}, "oos_checklist.0"),
            ({f"checklist_item{n}": "X-1" for n in range(25)}, "oos_checklist"),
            ({"checklist_Robert'); DROP TABLE events;--": "X-1"}, "oos_checklist.0.item"),
            ({"product_status": "teleported"}, "product_status"),
            ({"product_status": "infused"}, "infused_at: required"),
            ({"product_status": "infused", "infused_at": "yesterday"}, "infused_at: a date"),
            (
                {"product_status": "infused", "infused_at": "2026-11-20T10:00+05:00"},
                "infused_at: a date",
            ),
            ({"product_status": "infused", "infused_at": "0001-01-01T00:00"}, "infused_at"),
            ({"new_apheresis_needed": "perhaps"}, "remanufacture.new_apheresis_needed"),
            ({"bridging_therapy_needed": "yes"}, "remanufacture: goes with disposition"),
        ]
        for fields, said in refusals:
            refused = await post(client, incident_id, type="update", **fields)
            assert refused.status_code in (409, 422), (fields, refused.status_code)
            assert said in refused.text, (fields, said)
        basis = await post(
            client,
            incident_id,
            type="disposition",
            disposition="oos_release_offered",
            certificate_of_analysis="COA-1",
            assignable_cause="a\x00b",
        )
        assert basis.status_code == 422
        pathway = await post(
            client, incident_id, type="disposition", disposition="cancelled", oos_pathway="nope"
        )
        assert pathway.status_code == 422 and "oos_pathway" in pathway.text
    assert event_types(service) == before
    assert incident_row(service, incident_id).product_status is None


async def test_a_viewer_cannot_post_from_the_incident_page(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await opened(service, smtp)
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        page = await client.get(f"/console/incidents/{incident_id}")
        assert 'name="checklist_' not in page.text and 'name="product_status"' not in page.text
        for fields in (
            {"type": "update", "product_status": "shipped"},
            {"type": "disposition", "disposition": "cancelled", "confirmed": "1"},
        ):
            form = {"csrf_token": csrf_token(page), "event_id": "console-viewer-0001", **fields}
            refused = await client.post(f"/console/incidents/{incident_id}/events", data=form)
            assert refused.status_code == 403
            assert "Your role can read but not act" in refused.text
    assert event_types(service) == ["release_failure"]
