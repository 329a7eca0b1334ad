"""The product's state and the patient's indication through the API and over real SMTP: what
the center reads follows where the product is and whether lymphodepletion has started, the
infusion window is the label's for the indication, each failed attribute carries its guidance,
and a lot already infused is never cancelled."""

from __future__ import annotations

from typing import Any

from oos_notify.delivery.capture import CaptureServer
from tests.conftest import RunningService, release_failure
from tests.test_clinical import late_sterility, mail_to, plain
from tests.test_lifecycle import COORDINATOR, PHYSICIAN, detail, follow_up, post, timeline

SHIPPED = {
    "product_shipment": "2026-11-23",
    "lymphodepletion_start": "2026-11-30",
    "lymphodepletion_end": "2026-12-02",
}
"""Key dates of a product shipped yesterday (the test clock is Tue 24 Nov 2026, 09:12 CST)."""


async def refused(service: RunningService, event: dict[str, Any]) -> dict[str, Any]:
    response = await service.post_event(event)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    result: dict[str, Any] = error
    return result


async def test_cancelling_a_product_already_infused_is_refused_with_what_to_post_instead(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given a late result on a product the patient received
    opened = await post(
        service, late_sterility(1, product_status="infused", infused_at="2026-11-20T16:30:00Z")
    )
    sent = len(smtp.handler.messages())

    # When QA cancels the lot
    error = await refused(service, follow_up("disposition", 200, disposition="cancelled"))

    # Then it is refused, naming what to post instead, and nothing is changed or sent
    assert error["loc"] == ["body", "disposition"]
    assert error["msg"] == (
        "the product was already infused, so the lot cannot be cancelled: post a late_result "
        "event for a result out of specification, or a resolved event to close the incident"
    )
    state = await detail(service, opened["incident_id"])
    assert state["disposition"] == "under_investigation"
    await service.settle()
    assert len(smtp.handler.messages()) == sent


async def test_a_late_result_cannot_open_an_infused_product_as_cancelled(
    service: RunningService,
) -> None:
    error = await refused(
        service,
        late_sterility(
            1,
            product_status="infused",
            infused_at="2026-11-20T16:30:00Z",
            disposition="cancelled",
        ),
    )
    assert error["loc"] == ["body", "disposition"]
    assert "post a late_result event" in error["msg"]


async def test_a_cancelled_lot_cannot_be_recorded_as_infused(
    service: RunningService, smtp: CaptureServer
) -> None:
    await post(service, release_failure(product_status="at_center"))
    await post(service, follow_up("disposition", 200, disposition="cancelled"))

    error = await refused(
        service,
        follow_up("update", 201, product_status="infused", infused_at="2026-11-24T15:00:00Z"),
    )

    assert error["loc"] == ["body", "product_status"]
    assert error["msg"].startswith("the lot is cancelled, so the product cannot be recorded")


async def test_an_indication_the_product_has_no_window_for_is_refused(
    service: RunningService,
) -> None:
    error = await refused(service, release_failure(indication="mcl"))
    assert error["loc"] == ["body", "indication"]
    assert error["msg"] == "'mcl' is not an indication of product 'CARTX'; known: all, dlbcl, fl"

    error = await refused(service, release_failure(product_code="BCMX", indication="mm"))
    assert error["msg"].startswith("product 'BCMX' has no infusion windows by indication")


async def test_a_shipped_product_is_quarantined_on_receipt_before_its_shipper_runs_out(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given a lot that failed after it was shipped, for a patient treated for DLBCL
    opened = await post(
        service,
        release_failure(product_status="shipped", indication="dlbcl", key_dates=SHIPPED),
    )
    assert (await detail(service, opened["incident_id"]))["indication"] == "dlbcl"

    # Then the coordinator reads where to hold it, until when, and the label's window
    mail = mail_to(smtp.handler.messages(), COORDINATOR)
    assert mail.subject == "Confirm receipt: OOS-2026-0142, lot LOT-24-1187 failed release"
    text = plain(mail)
    for says in (
        "2. The product is on its way to the center. Quarantine it on receipt, in the cell lab: "
        "do not thaw it and do not infuse it. Keep it quarantined until Example Therapeutics "
        "gives its disposition in writing.",
        "If it is still in its shipper, move it to the cell lab's liquid-nitrogen storage "
        "before Wed 02 Dec 2026: the shipper holds its temperature for 9 days from shipment.",
        "3. Review the key dates with the treating physician: Example Therapeutics advises not "
        "starting lymphodepletion before the product's disposition is known.",
        "The label's window for relapsed or refractory diffuse large B-cell lymphoma (DLBCL): "
        "infuse 2 days to 11 days after lymphodepletion ends. Source: tisagenlecleucel "
        "prescribing information, 2.2 (DLBCL).",
        "With the dates above, that is Fri 04 Dec 2026 to Sun 13 Dec 2026.",
        "Whether to repeat lymphodepletion if the product cannot be infused within it is the "
        "treating physician's decision.",
        "viability: Low viability means fewer living CAR-T cells per bag",
    ):
        assert says in text, says
    for wrong in ("has to be repeated", "Hold patient communication", "should not start"):
        assert wrong not in text, wrong


async def test_a_cancellation_after_lymphodepletion_started_tells_the_physician_today(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given a failed lot at the center, and lymphodepletion started this morning
    await post(service, release_failure(product_status="at_center"))
    started = {"lymphodepletion_start": "2026-11-24", "lymphodepletion_end": "2026-11-26"}
    await post(service, follow_up("update", 200, key_dates=started))
    sent = len(smtp.handler.messages())

    # When QA cancels the lot
    opened = await post(service, follow_up("disposition", 201, disposition="cancelled"))

    # Then those told read that the product is quarantined for return or destruction, and that
    # lymphodepletion has started without this lot
    notice = mail_to(smtp.handler.messages()[sent:], PHYSICIAN)
    assert notice.subject == "Quarantine the product: OOS-2026-0142, lot LOT-24-1187 cancelled"
    text = plain(notice)
    for says in (
        "The lot has been cancelled: the product at the center must not be used for this patient.",
        "Quarantine the product in the cell lab now: do not thaw it and do not infuse it. Label "
        "it not for use and keep it until Example Therapeutics QA says whether it is returned or "
        "destroyed (a destruction is recorded under the center's procedure); call Example "
        "Therapeutics QA (A. Rivera, +1 555 0100) to arrange it.",
        "Lymphodepletion started on Tue 24 Nov 2026, but this lot will not be infused.",
    ):
        assert says in text, says
    for wrong in ("will not be shipped", "Do not start lymphodepletion", "label's window"):
        assert wrong not in text, wrong
    assert "incident_updated" in {
        e["action"] for e in await timeline(service, opened["incident_id"])
    }


async def test_a_mycoplasma_result_after_infusion_asks_for_pcr(
    service: RunningService, smtp: CaptureServer
) -> None:
    event = late_sterility(1, product_status="infused", infused_at="2026-11-20T16:30:00Z")
    event["failed_attributes"] = [
        {"attribute": "Mycoplasma", "specification": "not detected", "result": "detected"}
    ]
    await post(service, event)

    mail = mail_to(smtp.handler.messages(), COORDINATOR)
    assert (
        mail.subject == "Assess the patient now: OOS-2026-0142, late OOS result on lot LOT-24-1187"
    )
    text = plain(mail)
    assert "1. The treating physician assesses the patient now for signs of infection." in text
    assert (
        "mycoplasma, for the patient who received it: Assess the patient for signs of infection "
        "now. Routine blood cultures do not detect Mycoplasma: ask the laboratory for Mycoplasma "
        "PCR (nucleic acid amplification) on blood, and involve infectious diseases." in text
    )
    assert "Take blood cultures" not in text
