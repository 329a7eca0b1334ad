"""Deciders sign with a passkey: enrolled once from the link of their decision request, each
decision signed with an assertion whose challenge is derived from what is decided, so the
signature names the enrolled person and is bound to the decision; ``audit verify`` checks the
assertion again against the enrolled key."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import Session, col, select

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.store import audit, signatures
from oos_notify.store.db import transaction
from oos_notify.store.models import AuditEntry, PasskeyCredential
from tests.conftest import RunningService, ack_link, release_failure
from tests.passkeys import SoftPasskey, decide, enrol, signed_fields
from tests.test_lifecycle import (
    COORDINATOR,
    PHYSICIAN,
    QA,
    decision_request,
    detail,
    follow_up,
    post,
    timeline,
)
from tests.test_migrations import oos_notify

PRINTED_NAME = "Dr. Lena Ortiz, CAR-T attending"
"""The decider's name as the center's agreement gives it: the name their passkey signs with."""
ACCEPT_MEANING = "accept use of the out-of-specification product for this patient"


async def offered(service: RunningService, smtp: CaptureServer) -> tuple[str, str]:
    """An incident whose product is offered for release: its id and the decider's link."""
    opened = await post(service, release_failure())
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))
    return opened["incident_id"], ack_link(decision_request(smtp))


def device_for(service: RunningService) -> SoftPasskey:
    return SoftPasskey(service.services.settings.public_base_url)


async def test_a_decider_enrols_from_the_emailed_link_and_signs_the_decision_with_it(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given a decision request to the physician, who has no passkey yet
    incident_id, link = await offered(service, smtp)
    request = decision_request(smtp).part("plain")

    # Then the email says who decides, how they sign, and where to set up the passkey first
    assert "RECORD YOUR DECISION" in request
    assert f"You, {PRINTED_NAME}, sign your decision there with your passkey" in request
    assert "SET UP YOUR PASSKEY FIRST (ONCE)" in request
    assert f"{link}/passkey" in request
    assert f"for {PRINTED_NAME} <{PHYSICIAN}>: your decisions are then signed" in request
    page = await service.client.get(link)
    assert "No passkey yet" in page.text and f'href="{link.rsplit("/", 1)[1]}/passkey"' in page.text

    # When the physician opens the enrolment link and sets up a passkey
    enrolment = await service.client.get(f"{link}/passkey")
    assert enrolment.status_code == 200
    assert "Set up your passkey to sign decisions" in enrolment.text
    assert PRINTED_NAME in enrolment.text and PHYSICIAN in enrolment.text
    assert "script-src 'self'" in enrolment.headers["content-security-policy"]
    device = device_for(service)
    enrolled = await enrol(service.client, link, device)

    # Then it is kept for the physician, in the name the center's agreement gives them
    assert enrolled.status_code == 201, enrolled.text
    assert enrolled.json()["message"] == (
        f"Your passkey is set up. Your decisions are signed as {PRINTED_NAME}."
    )
    page = await service.client.get(link)
    assert f"You sign a decision with your passkey, as <strong><bdi>{PRINTED_NAME}" in page.text
    assert 'name="printed_name"' not in page.text

    # When the physician signs the acceptance with it
    clock.advance(timedelta(minutes=30))
    signed = await decide(service.client, link, "accept_oos_product", device)
    assert signed.status_code == 200 and "your decision is recorded" in signed.text
    await service.settle()

    # Then the decision is signed by the enrolled person, with the passkey, bound to its content
    state = await detail(service, incident_id)
    assert state["decision"] == "accept_oos_product"
    signature = state["decision_signature"]
    assert (signature["printed_name"], signature["method"]) == (PRINTED_NAME, "passkey")
    assert signature["meaning"].startswith(ACCEPT_MEANING)
    decided = next(e for e in await timeline(service, incident_id) if e["action"] == "decided")
    content = decided["detail"]["signed_content"]
    assert (content["incident"], content["lot"], content["choice"]) == (
        "OOS-2026-0142",
        "LOT-24-1187",
        "accept_oos_product",
    )
    assert content["decider"] == PHYSICIAN and content["meaning"] == signature["meaning"]
    recorded = decided["detail"]["signature"]
    assert recorded["method"] == "passkey" and recorded["printed_name"] == PRINTED_NAME
    assert signature["content_sha256"] == recorded["content_sha256"]
    assert set(recorded["evidence"]) >= {
        "credential_id",
        "authenticator_data",
        "client_data_json",
        "signature",
        "public_key",
    }
    [receipt] = [
        m
        for m in smtp.handler.messages()
        if m.recipients[0] == QA and m.subject.startswith("Act on decision")
    ]
    assert f"Printed name:     {PRINTED_NAME}" in receipt.part("plain")
    assert "Signed with:      passkey (WebAuthn) the signer enrolled" in receipt.part("plain")
    with Session(service.services.engine) as session:
        assert audit.verify(session).intact


async def test_a_decision_without_a_valid_assertion_is_refused_and_nothing_is_recorded(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given a physician with a passkey, on the decision page
    incident_id, link = await offered(service, smtp)
    device = device_for(service)
    assert (await enrol(service.client, link, device)).status_code == 201
    good = await signed_fields(service.client, link, "decline_product", device)
    stranger = SoftPasskey(service.services.settings.public_base_url)
    stranger.credential_id = device.credential_id  # claims the enrolled credential, other key
    forged = await signed_fields(service.client, link, "decline_product", stranger)
    unverified = device_for(service)
    unverified.key, unverified.credential_id = device.key, device.credential_id
    unverified.counter, unverified.user_verified = 100, False
    unverified_fields = await signed_fields(service.client, link, "decline_product", unverified)
    other_origin = SoftPasskey("http://localhost.example:8000")
    other_origin.key, other_origin.credential_id = device.key, device.credential_id
    other_origin.counter = 200

    attempts: list[tuple[dict[str, str], str]] = [
        ({"response": "decline_product"}, "A decision is recorded only when you sign it"),
        ({**good, "assertion": ""}, "A decision is recorded only when you sign it"),
        ({**good, "signing": ""}, "A decision is recorded only when you sign it"),
        ({**good, "assertion": "not json"}, "does not check out"),
        ({**good, "assertion": "[]"}, "does not check out"),
        ({**good, "assertion": json.dumps({"id": "AAAA"})}, "is not the one set up for"),
        ({**good, "assertion": json.dumps({"id": "A\u0000B"})}, "names no credential"),
        ({**good, "assertion": json.dumps({"id": 7})}, "names no credential"),
        ({**good, "signing": good["signing"][:-4] + "AAAA"}, "does not belong to this page"),
        (forged, "does not check out"),
        (unverified_fields, "does not check out"),
    ]
    for fields, says in attempts:
        # When a decision is posted without an assertion that signs it
        refused = await service.client.post(link, data=fields)

        # Then it is refused with a plain page, and nothing is recorded
        assert refused.status_code == 422, (fields, refused.text)
        assert says in refused.text, (says, refused.text)
    state = await detail(service, incident_id)
    assert state["decision"] is None and state["acknowledgements"] == []

    # And the genuine signature still records the decision
    accepted = await service.client.post(link, data=good)
    assert "your decision is recorded" in accepted.text
    assert (await detail(service, incident_id))["decision"] == "decline_product"


async def test_an_assertion_made_for_another_decision_is_refused(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given a physician whose passkey signed "decline"
    incident_id, link = await offered(service, smtp)
    device = device_for(service)
    assert (await enrol(service.client, link, device)).status_code == 201
    declined = await signed_fields(service.client, link, "decline_product", device)

    # When that signature is posted with "accept"
    swapped = await service.client.post(link, data={**declined, "response": "accept_oos_product"})

    # Then nothing is recorded: the passkey signed another decision's content
    assert swapped.status_code == 422
    assert "Your passkey signed a different decision from the one posted" in swapped.text
    assert (await detail(service, incident_id))["decision"] is None

    # When a signature's challenge was made for other content, under this page's sealed content
    other = await signed_fields(service.client, link, "request_remanufacture", device)
    mixed = {**declined, "assertion": other["assertion"]}
    refused = await service.client.post(link, data={**mixed, "response": "decline_product"})

    # Then it does not verify either
    assert refused.status_code == 422 and "does not check out" in refused.text
    assert (await detail(service, incident_id))["decision"] is None


async def test_a_signing_is_bound_to_its_link(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given two incidents offered to the same physician, who enrolled from the first
    first_id, first = await offered(service, smtp)
    device = device_for(service)
    assert (await enrol(service.client, first, device)).status_code == 201
    second_event = release_failure(
        event_id="QA-EVT-2026-000300", incident_ref="OOS-2026-0150", lot_number="LOT-24-2001"
    )
    await post(service, second_event)
    await post(
        service,
        follow_up(
            "disposition", 301, incident_ref="OOS-2026-0150", disposition="oos_release_offered"
        ),
    )
    requests = [m for m in smtp.handler.messages() if m.subject.startswith("Decision needed: ")]
    second = ack_link(next(m for m in requests if "OOS-2026-0150" in m.subject))
    assert "SET UP YOUR PASSKEY" not in requests[-1].part("plain")  # enrolled already

    # When the first incident's signature is posted on the second incident's page
    signed = await signed_fields(service.client, first, "decline_product", device)
    moved = await service.client.post(second, data=signed)

    # Then nothing is recorded on either
    assert moved.status_code == 422 and "does not belong to this page" in moved.text
    assert (await detail(service, first_id))["decision"] is None

    # And a signing too old is refused too
    clock.advance(timedelta(minutes=11))
    late = await service.client.post(first, data=signed)
    assert late.status_code == 422 and "This signing has expired" in late.text
    assert (await detail(service, first_id))["decision"] is None


def tampered(signed: dict[str, Any], what: str, origin: str) -> dict[str, Any]:
    """The audit detail of a passkey-signed decision with one part of it changed."""
    signature, content = signed["signature"], signed["signed_content"]
    evidence = signature["evidence"]
    if what == "content rehashed":
        forged = {**content, "choice": "decline_product"}
        changed = {**signature, "content_sha256": signatures.content_hash(forged)}
        return {"signed_content": forged, "signature": changed}
    replaced = {
        "assertion signature": {"signature": evidence["signature"][:-8] + "AAAAAAAA"},
        "public key": {"public_key": SoftPasskey(origin).cose_public_key()},
        "nonce": {"nonce": "another-nonce"},
    }[what]
    return {**signed, "signature": {**signature, "evidence": {**evidence, **replaced}}}


@pytest.mark.parametrize("what", ["assertion signature", "public key", "nonce", "content rehashed"])
async def test_a_tampered_passkey_signature_fails_audit_verify_naming_the_entry(
    service: RunningService, smtp: CaptureServer, clock: ManualClock, what: str
) -> None:
    # Given a decision signed with a passkey
    _, link = await offered(service, smtp)
    device = device_for(service)
    assert (await enrol(service.client, link, device)).status_code == 201
    await decide(service.client, link, "accept_oos_product", device)
    engine = service.services.engine
    with Session(engine) as session:
        entry = session.exec(select(AuditEntry).where(AuditEntry.action == "decided")).one()
        signed = dict(entry.detail)
        assert audit.verify(session).intact

    # When an entry is written with a part of its passkey signature changed (as by someone who
    # knows the hashing: the chain holds, and the content's hash matches where it was rehashed)
    origin = service.services.settings.public_base_url
    with transaction(engine) as session:
        audit.record(session, clock.now(), "decided", PHYSICIAN, **tampered(signed, what, origin))
    with Session(engine) as session:
        report = audit.verify(session)
        last = session.exec(select(func.max(AuditEntry.seq))).one()

    # Then audit verify fails at that entry: the assertion does not verify for what it signs
    assert not report.intact and report.broken_seq == last
    assert report.problem is not None
    assert report.problem.startswith("the passkey's assertion does not verify for what it signs")


async def test_enrolment_is_once_and_only_from_a_decision_request(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given a decision request to the physician, and the coordinator's notice
    _, link = await offered(service, smtp)
    coordinator = ack_link(
        next(m for m in smtp.handler.messages() if m.recipients[0] == COORDINATOR)
    )

    # When the coordinator's link is used to enrol
    page = await service.client.get(f"{coordinator}/passkey")
    options = await service.client.post(f"{coordinator}/passkey/options")

    # Then it is refused: a passkey is set up only by the decider, from their own link
    assert page.status_code == 409 and "a passkey is set up only from" in page.text
    assert options.status_code == 409
    assert "a passkey is set up only from" in options.json()["detail"]

    # When the physician enrols, and the link is used again to enrol another passkey
    assert (await enrol(service.client, link, device_for(service))).status_code == 201
    again = await enrol_again(service, link)

    # Then the second is refused: the first stays the one decisions are signed with
    assert again.status_code == 409
    assert f"A passkey is already set up for {PHYSICIAN}" in again.json()["detail"]
    with Session(service.services.engine) as session:
        kept = session.exec(select(PasskeyCredential).order_by(col(PasskeyCredential.id))).all()
    assert [(c.person, c.printed_name) for c in kept] == [(PHYSICIAN, PRINTED_NAME)]


async def enrol_again(service: RunningService, link: str) -> Any:
    return await service.client.post(f"{link}/passkey/options")


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        pytest.param("/passkey", "not json", 422, id="enrol-not-json"),
        pytest.param("/passkey", {"state": "x"}, 422, id="enrol-no-credential"),
        pytest.param("/passkey", {"state": "x", "credential": {}}, 422, id="enrol-bad-state"),
        pytest.param("/passkey", {"state": "x" * 5000, "credential": {}}, 422, id="enrol-long"),
        pytest.param("/signing", {"response": "received"}, 422, id="sign-not-a-decision"),
        pytest.param("/signing", {"response": "call_me"}, 422, id="sign-call-me"),
        pytest.param("/signing", {"response": "x" * 100}, 422, id="sign-long"),
        pytest.param("/signing", {}, 422, id="sign-nothing"),
        pytest.param("/signing", {"response": "decline_product"}, 409, id="sign-no-passkey"),
    ],
)
async def test_hostile_passkey_requests_get_a_clear_refusal(
    service: RunningService, smtp: CaptureServer, path: str, body: Any, status: int
) -> None:
    _, link = await offered(service, smtp)
    if isinstance(body, str):
        answer = await service.client.post(
            f"{link}{path}", content=body, headers={"Content-Type": "application/json"}
        )
    else:
        answer = await service.client.post(f"{link}{path}", json=body)
    assert answer.status_code == status, answer.text
    with Session(service.services.engine) as session:
        assert session.exec(select(PasskeyCredential)).all() == []


async def test_a_coordinators_page_offers_no_decision(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given the product offered, and the coordinator's confirmation link
    await offered(service, smtp)
    coordinator = ack_link(
        next(m for m in smtp.handler.messages() if m.recipients[0] == COORDINATOR)
    )

    # When the coordinator opens it
    page = await service.client.get(coordinator)

    # Then it asks for a confirmation, and offers no decision to sign
    assert "Confirm receipt" in page.text
    assert "You sign:" not in page.text and "Request re-manufacture" not in page.text
    assert 'value="request_remanufacture"' not in page.text
    assert "passkey" not in page.text.lower()
    refused = await service.client.post(coordinator, data={"response": "request_remanufacture"})
    assert refused.status_code == 422


async def test_a_removed_passkey_signs_nothing_and_the_decider_enrols_again(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given a physician who enrolled a passkey, then lost the device
    incident_id, link = await offered(service, smtp)
    lost = device_for(service)
    assert (await enrol(service.client, link, lost)).status_code == 201
    signing = await signed_fields(service.client, link, "decline_product", lost)
    url = service.services.settings.database_url

    # When the operator removes it
    removed = await asyncio.to_thread(oos_notify, url, "passkey", "remove", PHYSICIAN.upper())

    # Then it signs nothing more, the list says so, and the physician may enrol a new one
    assert removed.returncode == 0, removed.stderr
    assert f"removed 1 passkey(s) of {PHYSICIAN}" in removed.stdout
    listed = await asyncio.to_thread(oos_notify, url, "passkey", "list")
    assert listed.stdout.startswith(f"{PHYSICIAN}\t{PRINTED_NAME}\tenrolled ")
    assert "\tremoved " in listed.stdout
    refused = await service.client.post(link, data=signing)
    assert refused.status_code == 422 and "is not the one set up for" in refused.text
    assert (await detail(service, incident_id))["decision"] is None
    again = device_for(service)
    assert (await enrol(service.client, link, again)).status_code == 201
    decided = await decide(service.client, link, "decline_product", again)
    assert "your decision is recorded" in decided.text
    actions = [e["action"] for e in await timeline(service, incident_id)]
    assert actions.count("passkey_enrolled") == 2
    nobody = await asyncio.to_thread(oos_notify, url, "passkey", "remove", "nobody@x.example")
    assert nobody.returncode == 1 and "has no passkey that signs" in nobody.stderr
