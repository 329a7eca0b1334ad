"""Four eyes on a decision's revision: an API key only proposes, one QA user's proposal stays
pending, and a second QA user's signed approval makes it take effect and tells the center.
Every signing re-enters the account's password; a wrong one records nothing."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlmodel import Session, col, select

from oos_notify.delivery.capture import CapturedMessage, CaptureServer
from oos_notify.store import audit
from oos_notify.store.db import transaction
from oos_notify.store.models import AuditEntry, DecisionProposal, SignInAttempt
from oos_notify.web.console import accounts
from oos_notify.web.console.accounts import Role
from tests.conftest import START, RunningService, release_failure
from tests.console.conftest import (
    QA_NAME,
    SECOND_QA_NAME,
    People,
    add_second_qa,
    browser,
    propose_revision,
    settle_revision,
    sign_in,
)
from tests.test_lifecycle import (
    CELL_LAB,
    COORDINATOR,
    NAVIGATOR,
    PHARMACY,
    PHYSICIAN,
    QA,
    QUALITY,
    detail,
    follow_up,
    post,
    sent_to,
)

REVISION = {
    "response": "decline_product",
    "decided_by": "mgm-md",
    "reason": "Declined by telephone after the callback at 10:00 CST.",
}
_PROPOSAL = re.compile(r'/revisions/(rev_[A-Za-z0-9]+)/approve"')


async def offered(service: RunningService) -> str:
    """An incident whose out-of-specification product is offered for the physician's decision."""
    opened = await post(service, release_failure())
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))
    await service.settle()
    return str(opened["incident_id"])


def trail(service: RunningService, incident_id: str, *actions: str) -> list[AuditEntry]:
    with Session(service.services.engine) as session:
        return list(
            session.exec(
                select(AuditEntry)
                .where(AuditEntry.incident_id == incident_id, col(AuditEntry.action).in_(actions))
                .order_by(col(AuditEntry.seq))
            ).all()
        )


def proposals(service: RunningService, incident_id: str) -> list[DecisionProposal]:
    with Session(service.services.engine) as session:
        return list(
            session.exec(
                select(DecisionProposal)
                .where(DecisionProposal.incident_id == incident_id)
                .order_by(col(DecisionProposal.proposed_at), col(DecisionProposal.id))
            ).all()
        )


def new_mail(smtp: CaptureServer, before: int) -> list[CapturedMessage]:
    return smtp.handler.messages()[before:]


async def api_proposal(service: RunningService, incident_id: str, **fields: Any) -> httpx.Response:
    return await service.client.post(
        f"/v1/incidents/{incident_id}/decision-revisions",
        json={**REVISION, **fields},
        headers=service.auth,
    )


async def test_an_api_key_only_proposes_and_cannot_make_a_revision_take_effect(
    service: RunningService, smtp: CaptureServer
) -> None:
    incident_id = await offered(service)
    before = len(smtp.handler.messages())

    # When the QA system proposes a revision with its API key
    proposed = await api_proposal(service, incident_id)

    # Then it is pending: the decision in force is unchanged and the center hears nothing
    assert proposed.status_code == 202, proposed.text
    body = proposed.json()
    assert (body["status"], body["proposed_by"]) == ("pending", "api key test-qa-system")
    assert body["proposal_signature"] is None
    await service.settle()
    assert (await detail(service, incident_id))["decision"] is None
    assert new_mail(smtp, before) == []
    listed = await service.client.get(
        f"/v1/incidents/{incident_id}/decision-revisions", headers=service.auth
    )
    assert [p["id"] for p in listed.json()] == [body["id"]]

    # And a key that tries to record it at once, or to approve it, is refused with 403
    direct = await api_proposal(
        service,
        incident_id,
        recorded_by={"name": "A. Rivera", "email": "qa@manufacturer.example"},
    )
    assert direct.status_code == 403, direct.text
    assert "an API key cannot record a revision" in direct.json()["detail"]
    approval = await service.client.post(
        f"/v1/incidents/{incident_id}/decision-revisions/{body['id']}/approval",
        headers=service.auth,
    )
    assert approval.status_code == 403
    assert "an API key cannot approve a revision" in approval.json()["detail"]
    assert (await detail(service, incident_id))["decision"] is None
    assert [p.status for p in proposals(service, incident_id)] == ["pending"]


async def test_one_qa_user_proposes_a_second_approves_and_the_center_is_told(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await offered(service)
    second = add_second_qa(service)
    async with browser(service) as first_qa, browser(service) as second_qa:
        await sign_in(first_qa, people.qa)
        await sign_in(second_qa, second)

        # Given the incident page shows the meaning before the password field
        page = await first_qa.get(f"/console/incidents/{incident_id}")
        form = page.text[page.text.index('action="/console/incidents/') :]
        assert form.index("You sign:</strong> I propose this revision") < form.index(
            'name="password"'
        )

        # When one QA user proposes a revision, signed
        before = len(smtp.handler.messages())
        proposed = await propose_revision(first_qa, incident_id, **REVISION)
        assert proposed.status_code == 303, proposed.text
        await service.settle()

        # Then it stays pending: nothing changes and nobody is told
        assert (await detail(service, incident_id))["decision"] is None
        assert new_mail(smtp, before) == []
        [proposal] = proposals(service, incident_id)
        assert proposal.status == "pending"

        # And its proposer cannot approve it
        own = await settle_revision(first_qa, incident_id, proposal.id, "approve")
        assert own.status_code == 403
        assert "proposed this revision and cannot also approve it" in own.text
        assert "another QA user must approve it" in own.text
        assert proposals(service, incident_id)[0].status == "pending"
        assert (await detail(service, incident_id))["decision"] is None

        # When a second QA user approves it, signed
        shown = await second_qa.get(f"/console/incidents/{incident_id}")
        assert _PROPOSAL.findall(shown.text) == [proposal.id]
        approved = await settle_revision(second_qa, incident_id, proposal.id, "approve")
        assert approved.status_code == 303, approved.text
        assert approved.headers["location"].endswith("?signed=approved")
        await service.settle()

    # Then the decision takes effect in the physician's name, signed by the approver
    state = await detail(service, incident_id)
    assert state["decision"] == "decline_product"
    [decided] = [a for a in state["acknowledgements"] if a["purpose"] == "decision"]
    assert decided["by"] == PHYSICIAN
    assert decided["signature"]["printed_name"] == SECOND_QA_NAME

    # And the center's coordinator, cell lab, pharmacy and quality unit are told the outcome,
    # QA gets the receipt, the physician is told what was recorded in their name, and the
    # round now acknowledged briefs the patient navigator
    told = new_mail(smtp, before)
    assert sent_to(told) == {
        NAVIGATOR: 1,
        COORDINATOR: 1,
        CELL_LAB: 1,
        PHARMACY: 1,
        QUALITY: 1,
        QA: 1,
        PHYSICIAN: 1,
    }
    outcome = {m.recipients[0]: m for m in told}[COORDINATOR]
    assert outcome.subject == "Decision made: OOS-2026-0142, lot LOT-24-1187: product declined"
    text = outcome.part("plain")
    assert f"Signed by {SECOND_QA_NAME}" in text
    assert "Declined by telephone after the callback at 10:00 CST." in text
    assert "This product is not shipped for the patient." in text
    recorded = {m.recipients[0]: m for m in told}[PHYSICIAN]
    assert recorded.subject == "Check your decision: OOS-2026-0142, lot LOT-24-1187, recorded by QA"

    # And both signatures are in the audit trail, bound to what they sign
    proposed_entry, revised_entry = trail(
        service, incident_id, "decision_revision_proposed", "decision_revised"
    )
    assert (proposed_entry.actor, revised_entry.actor) == (people.qa, second)
    for entry, name, signer in (
        (proposed_entry, QA_NAME, people.qa),
        (revised_entry, SECOND_QA_NAME, second),
    ):
        signature = entry.detail["signature"]
        assert (signature["method"], signature["printed_name"], signature["signer"]) == (
            "password",
            name,
            signer,
        )
        assert entry.detail["signed_content"]["proposal_id"] == proposal.id
        assert entry.detail["signed_content"]["response"] == "decline_product"
    assert revised_entry.detail["signature"]["meaning"].startswith("I approve this revision")
    with Session(service.services.engine) as session:
        report = audit.verify(session)
    assert report.intact, report.problem

    # And the incident page shows who proposed and who approved, each signed
    async with browser(service) as reader:
        await sign_in(reader, people.viewer)
        page = await reader.get(f"/console/incidents/{incident_id}")
    assert "Approved: Decline the product" in page.text
    assert f"<bdi>{QA_NAME}</bdi> ({people.qa}), signed" in page.text
    assert f"<bdi>{SECOND_QA_NAME}</bdi> ({second}), signed" in page.text
    assert "Approve and sign" not in page.text


async def test_an_api_proposal_takes_effect_on_one_qa_users_signed_approval(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await offered(service)
    proposal_id = (await api_proposal(service, incident_id)).json()["id"]

    async with browser(service) as client:
        await sign_in(client, people.qa)
        approved = await settle_revision(client, incident_id, proposal_id, "approve")
    assert approved.status_code == 303, approved.text

    assert (await detail(service, incident_id))["decision"] == "decline_product"
    [entry] = trail(service, incident_id, "decision_revised")
    assert entry.detail["revision"]["proposed_by"] == "api key test-qa-system"
    assert entry.detail["signature"]["printed_name"] == QA_NAME


async def test_a_wrong_password_signs_nothing_and_counts_toward_the_lockout(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await offered(service)
    proposal_id = (await api_proposal(service, incident_id)).json()["id"]
    async with browser(service) as client:
        await sign_in(client, people.qa)

        # When the QA user signs with a wrong password
        wrong = await settle_revision(client, incident_id, proposal_id, "approve", "not it")
        proposed = await propose_revision(client, incident_id, "not it either", **REVISION)

        # Then each is refused with the reason, and nothing is recorded
        for answer in (wrong, proposed):
            assert answer.status_code == 401, answer.text
            assert "That is not your password, so nothing was signed" in answer.text
        assert (await detail(service, incident_id))["decision"] is None
        assert [p.status for p in proposals(service, incident_id)] == ["pending"]
        assert trail(service, incident_id, "decision_revised", "decision_revision_rejected") == []
        assert len(trail(service, incident_id, "decision_revision_proposed")) == 1

        # And the failures count against the account as failed sign-ins do: after five, even
        # the right password waits
        for _ in range(3):
            await settle_revision(client, incident_id, proposal_id, "reject", "wrong again")
        throttled = await settle_revision(client, incident_id, proposal_id, "approve")
        assert throttled.status_code == 429
        assert "Too many wrong passwords for this account" in throttled.text
        assert int(throttled.headers["Retry-After"]) > 0
    assert (await detail(service, incident_id))["decision"] is None
    with Session(service.services.engine) as session:
        outcomes = session.exec(
            select(SignInAttempt.outcome)
            .where(SignInAttempt.email == people.qa)
            .order_by(col(SignInAttempt.id))
        ).all()
    assert outcomes == ["signed_in", *["refused"] * 5, "throttled"]


async def test_a_rejected_proposal_never_takes_effect(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await offered(service)
    proposal_id = (await api_proposal(service, incident_id)).json()["id"]
    second = add_second_qa(service)
    async with browser(service) as client, browser(service) as other:
        await sign_in(client, people.qa)
        await sign_in(other, second)
        rejected = await settle_revision(client, incident_id, proposal_id, "reject")
        assert rejected.status_code == 303, rejected.text
        late = await settle_revision(other, incident_id, proposal_id, "approve")

    assert late.status_code == 409
    assert f"the proposed revision {proposal_id} was rejected already" in late.text
    assert (await detail(service, incident_id))["decision"] is None
    [entry] = trail(service, incident_id, "decision_revision_rejected")
    assert entry.detail["signature"]["meaning"] == (
        "I reject this proposed revision: it never takes effect."
    )
    assert entry.detail["signature"]["printed_name"] == QA_NAME


async def test_a_viewer_cannot_propose_or_approve(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await offered(service)
    proposal_id = (await api_proposal(service, incident_id)).json()["id"]
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        page = await client.get(f"/console/incidents/{incident_id}")
        assert "Approve and sign" not in page.text and "Propose and sign" not in page.text
        refused = await settle_revision(client, incident_id, proposal_id, "approve")
        proposed = await propose_revision(client, incident_id, **REVISION)
    assert (refused.status_code, proposed.status_code) == (403, 403)
    assert (await detail(service, incident_id))["decision"] is None


async def test_a_hostile_or_empty_revision_form_is_refused_with_nothing_recorded(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await offered(service)
    async with browser(service) as client:
        await sign_in(client, people.qa)
        for fields, status in [
            ({**REVISION, "reason": ""}, 422),
            ({**REVISION, "reason": "x" * 2001}, 422),
            ({**REVISION, "reason": "Called at 09:40\x00"}, 422),
            ({**REVISION, "decided_by": "mgm-coord"}, 422),
            ({**REVISION, "response": "received"}, 422),
            ({**REVISION, "response": "<script>alert(1)</script>"}, 422),
        ]:
            answer = await propose_revision(client, incident_id, **fields)
            assert answer.status_code == status, (fields, answer.text)
            assert "<script>alert(1)</script>" not in answer.text
        shown = await propose_revision(
            client, incident_id, **{**REVISION, "reason": "<img src=x onerror=alert(1)>"}
        )
        assert shown.status_code == 303
        page = await client.get(f"/console/incidents/{incident_id}")
    assert "<img src=x onerror=alert(1)>" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert len(proposals(service, incident_id)) == 1


async def test_an_account_without_a_name_cannot_sign(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = await offered(service)
    with transaction(service.services.engine) as session:
        accounts.create_user(session, "nameless@manufacturer.example", Role.QA, "p" * 16, START)
    async with browser(service) as client:
        await sign_in(client, "nameless@manufacturer.example", "p" * 16)
        answer = await propose_revision(client, incident_id, "p" * 16, **REVISION)
    assert answer.status_code == 409
    assert "has no name to print on a signature" in answer.text
    assert "oos-notify user set-name nameless@manufacturer.example" in answer.text
    assert proposals(service, incident_id) == []
