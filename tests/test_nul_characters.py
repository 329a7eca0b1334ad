"""A NUL character (U+0000) in anything a client sends gets a clear 4xx, never a 500, on either
database: PostgreSQL's text cannot hold one, so it is refused where it comes in, naming the
field, and nothing is stored; no id can hold one, so a path with one finds nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import Session, select

from oos_notify.delivery.capture import CaptureServer
from oos_notify.store.models import Incident, SignInAttempt
from tests.conftest import RunningService, ack_link, received, release_failure
from tests.console.conftest import add_people, browser, csrf_token, sign_in

NUL = "\x00"


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"summary": f"Viability 61 %{NUL} below spec"}, ["body", "summary"]),
        (
            {
                "failed_attributes": [
                    {"attribute": f"viability{NUL}", "specification": ">= 70 %", "result": "61 %"}
                ]
            },
            ["body", "failed_attributes", 0, "attribute"],
        ),
    ],
    ids=["summary", "failed-attribute"],
)
async def test_an_event_with_a_nul_is_refused_by_field_and_nothing_is_stored(
    service: RunningService, change: dict[str, Any], location: list[Any]
) -> None:
    answer = await service.post_event(release_failure(**change))

    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["detail"]
    assert problem["loc"] == location and "U+0000 (NUL)" in problem["msg"]
    with Session(service.services.engine) as session:
        assert session.exec(select(Incident)).all() == []


async def test_an_address_with_a_nul_finds_nothing_and_a_query_with_one_is_refused_by_name(
    service: RunningService,
) -> None:
    people = add_people(service)
    auth = service.auth
    assert (await service.client.get("/v1/incidents/inc_1%00", headers=auth)).status_code == 404
    listed = await service.client.get("/v1/incidents?center_id=mercy%00", headers=auth)
    assert listed.status_code == 422
    assert listed.json()["detail"][0]["loc"] == ["query", "center_id"]
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        assert (await client.get("/console/incidents/inc_1%00")).status_code == 404
        rows = await client.get("/console/board/rows?center=mercy%00")
        assert rows.status_code == 422


async def test_a_confirmation_comment_with_a_nul_is_refused_and_acknowledges_nothing(
    service: RunningService, smtp: CaptureServer
) -> None:
    incident_id = (await service.post_event(release_failure())).json()["incident_id"]
    await service.settle()
    notice = next(m for m in await received(smtp, 3) if m.recipients == ("ct-coord@mercy.example",))

    answer = await service.client.post(
        ack_link(notice), data={"response": "received", "comment": f"Seen{NUL}, holding"}
    )

    assert answer.status_code == 422
    assert "A comment cannot hold the character U+0000 (NUL)" in answer.text
    detail = await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)
    assert detail.json()["status"] == "notifying" and detail.json()["acknowledgements"] == []


async def test_a_decision_revision_with_a_nul_is_refused_by_field(service: RunningService) -> None:
    incident_id = (await service.post_event(release_failure())).json()["incident_id"]

    answer = await service.client.post(
        f"/v1/incidents/{incident_id}/decision-revisions",
        headers=service.auth,
        json={
            "response": "accept_oos_product",
            "decided_by": "mgm-md",
            "reason": f"Called at 09:40{NUL}",
        },
    )

    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "reason"]


async def test_a_sign_in_with_a_nul_is_refused_and_counted_like_any_other(
    service: RunningService,
) -> None:
    people = add_people(service)
    async with browser(service) as client:
        form = await client.get("/console/sign-in")
        answer = await client.post(
            "/console/sign-in",
            data={
                "email": f"{people.qa}{NUL}",
                "password": "correct horse battery staple",
                "csrf_token": csrf_token(form),
                "next": "",
            },
        )

    assert answer.status_code == 401
    with Session(service.services.engine) as session:
        [attempt] = session.exec(select(SignInAttempt)).all()
    assert (attempt.email, attempt.outcome) == (f"{people.qa}\ufffd", "refused")
