"""The regulatory pathway enforced, over real HTTP and real SMTP: a checklist item gates the
transition it names, and under the EU route the physician requests supply only once the
manufacturer's risk evaluation is on file."""

from __future__ import annotations

from typing import Any

from oos_notify.delivery.capture import CaptureServer
from tests.conftest import RunningService, ack_link, release_failure
from tests.passkeys import enrol_and_decide
from tests.test_clinical import confirm, mail_to, plain
from tests.test_lifecycle import COORDINATOR, decision_request, detail, follow_up, post

EU_CENTER = "rhein-uk-bonn"
EU_PHYSICIAN = "car-t-oa@ukb.example"
EU_COORDINATOR = "zelltherapie@ukb.example"


def eu(event: dict[str, Any]) -> dict[str, Any]:
    """The same event about an incident at the German center, under the EU pathway."""
    return {**event, "center_id": EU_CENTER}


async def offered(
    service: RunningService, smtp: CaptureServer, coordinator: str, **fields: Any
) -> str:
    """A release failure the coordinator confirmed, then offered for release; its incident id."""
    center = {"center_id": EU_CENTER} if coordinator == EU_COORDINATOR else {}
    opened = await post(service, release_failure(**center))
    await service.client.post(
        ack_link(mail_to(smtp.handler.messages(), coordinator)), data={"response": "received"}
    )
    await service.settle()
    await post(
        service,
        {**follow_up("disposition", 200, disposition="oos_release_offered", **fields), **center},
    )
    return str(opened["incident_id"])


async def test_a_gated_transition_is_refused_with_409_until_its_item_is_confirmed(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given a product offered under single-patient expanded access, its risk assessment on file
    incident_id = await offered(
        service,
        smtp,
        COORDINATOR,
        oos_checklist=[{"item": "risk_assessment", "reference": "RA-2026-0142"}],
    )

    # Then the incident shows each item's gate, owner and due time
    items = {i["id"]: i for i in (await detail(service, incident_id))["oos_release"]["checklist"]}
    assert (items["consent"]["gates"], items["consent"]["owner"]) == ("infused", "physician")
    assert (items["risk_assessment"]["gates"], items["risk_assessment"]["owner"]) == (
        "shipped",
        "manufacturer:qa",
    )
    assert items["expanded_access"]["due_at"] == "2026-11-27T15:12:00Z", "3 days after the offer"

    # When QA records the shipment with the IND and the physician's request missing
    shipped = follow_up("update", 201, product_status="shipped")
    refused = await service.post_event(shipped)

    # Then it is refused with 409 naming the items that gate shipment, and nothing changes
    assert refused.status_code == 409
    text = refused.json()["detail"]
    assert "cannot be recorded as shipped" in text
    assert "physician_request (Treating physician's signed request form" in text
    assert "expanded_access (FDA single-patient IND" in text
    assert "consent" not in text, "consent gates the infusion, not the shipment"
    assert (await detail(service, incident_id))["product_status"] is None

    # When the same event confirms them, the shipment is recorded
    shipped["oos_checklist"] = [
        {"item": "physician_request", "reference": "SPR-2026-11-24"},
        {"item": "expanded_access", "reference": "IND-123456"},
    ]
    assert (await service.post_event(shipped)).status_code == 202
    assert (await detail(service, incident_id))["product_status"] == "shipped"

    # And the infusion waits for IRB approval and consent, the closing for them too
    infused = follow_up(
        "update",
        202,
        occurred_at="2026-11-25T18:00:00Z",
        product_status="infused",
        infused_at="2026-11-25T17:00:00Z",
    )
    refused = await service.post_event(infused)
    assert refused.status_code == 409
    assert "irb_approval" in refused.json()["detail"] and "consent" in refused.json()["detail"]
    await post(service, confirm(203, ("irb_approval", "IRB-EA-0099"), ("consent", "ICF-4471")))
    assert (await service.post_event(infused)).status_code == 202


async def test_the_eu_request_is_refused_before_the_risk_evaluation_is_on_file(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given a product offered under the EU pathway before the risk evaluation is on file
    incident_id = await offered(service, smtp, EU_COORDINATOR)

    # Then the physician is asked to request supply, and told what is not yet on file
    mail = decision_request(smtp)
    assert mail.recipients[0] == EU_PHYSICIAN
    text = plain(mail)
    assert "may supply it only if you, as the treating physician, request it in writing" in text
    assert "the test results below are not that evaluation" in text
    assert "Not yet on file: Manufacturer's risk evaluation, sent to the treating physician" in text
    assert "- request supply of the out-of-specification product for this patient" in text
    assert "offers to release" not in text
    assert "accept use of" not in text

    # And the decision page does not offer the request yet
    link = ack_link(mail)
    page = await service.client.get(link)
    assert 'value="accept_oos_product"' not in page.text
    assert "Not yet on file: Manufacturer&#39;s risk evaluation" in page.text

    # When the physician posts a request anyway, it is refused with 409 and nothing is recorded
    early = await service.client.post(link, data={"response": "accept_oos_product"})
    assert early.status_code == 409
    assert "the product is supplied only after this is on file" in early.text
    assert (await detail(service, incident_id))["decision"] is None

    # And QA cannot record it on the physician's word either
    revision = {
        "response": "accept_oos_product",
        "decided_by": "ukb-md",
        "reason": "Requested by telephone.",
    }
    path = f"/v1/incidents/{incident_id}/decision-revisions"
    refused = await service.client.post(path, json=revision, headers=service.auth)
    assert refused.status_code == 409
    assert "once risk_evaluation is on file" in refused.json()["detail"]

    # When QA confirms the risk evaluation
    await post(service, eu(confirm(201, ("risk_evaluation", "RE-2026-0142"))))

    # Then the page offers the request, worded as the physician's request for supply
    page = await service.client.get(link)
    assert "Request supply of the out-of-specification product" in page.text
    assert (
        "You sign: I request supply of the out-of-specification product for this patient, "
        "having considered the manufacturer&#39;s evaluation of its risks, under EU: " in page.text
    )

    # And the physician's signed request is recorded with that meaning
    signed = await enrol_and_decide(service.client, link, "accept_oos_product")
    assert signed.status_code == 200, signed.text
    state = await detail(service, incident_id)
    assert state["decision"] == "accept_oos_product"
    assert state["decision_signature"]["method"] == "passkey"
    assert state["decision_signature"]["meaning"].startswith(
        "request supply of the out-of-specification product for this patient"
    )
