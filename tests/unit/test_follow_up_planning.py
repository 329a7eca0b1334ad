"""Who hears of a follow-up event, and which key-date steps move: pure planning, fixed clock."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from oos_notify.agreements.config import EffectiveAgreement, load_agreements
from oos_notify.agreements.vocabulary import CenterRole, Disposition, EventType, KeyDate, Severity
from oos_notify.incidents.planning import IncidentFacts, plan_follow_up, plan_key_date_steps
from oos_notify.store.lifecycle import Condition, NotificationKind
from oos_notify.store.outbox import Addressee

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
NOW = datetime(2026, 11, 24, 19, 30, tzinfo=UTC)
COORDINATOR = Addressee(
    "mgm-coord", "coordinator", "Cell Therapy Coordinator", "ct-coord@mercy.example"
)
LAB = Addressee("mgm-lab", "cell_lab", "Cell Processing Lab", "celllab@mercy.example")
PHYSICIAN = Addressee("mgm-md", "physician", "Treating Physician Group", "ct-md@mercy.example")
ACCOUNT_LEAD = Addressee(
    "al-midwest",
    "manufacturer:account_lead",
    "Account Lead Midwest",
    "al-midwest@manufacturer.example",
)


@pytest.fixture(scope="module")
def mercy() -> EffectiveAgreement:
    return load_agreements(CONFIG_DIR).effective("mercy-general-main")


def facts(lymphodepletion: date) -> IncidentFacts:
    return IncidentFacts(
        EventType.RELEASE_FAILURE, Severity.MAJOR, {KeyDate.LYMPHODEPLETION_START: lymphodepletion}
    )


@pytest.mark.parametrize(
    ("event_type", "template"),
    [
        (EventType.UPDATE, "incident_update"),
        (EventType.LATE_RESULT, "late_result_notice"),
        (EventType.RESOLVED, "incident_resolved"),
        (EventType.WITHDRAWN, "incident_withdrawn"),
    ],
)
def test_everyone_told_hears_of_a_follow_up_once_and_at_once(
    mercy: EffectiveAgreement, event_type: EventType, template: str
) -> None:
    # The coordinator was told twice (first notice and a reminder), once in other letter case
    shouting = Addressee(
        COORDINATOR.contact_id, "coordinator", "Coordinator", "CT-COORD@mercy.example"
    )
    told = [COORDINATOR, LAB, shouting, ACCOUNT_LEAD]

    notices = plan_follow_up(mercy, event_type, None, told, NOW)

    assert [(n.recipient_email, n.template, n.kind) for n in notices] == [
        (COORDINATOR.email, template, NotificationKind.FOLLOW_UP),
        (LAB.email, template, NotificationKind.FOLLOW_UP),
        (ACCOUNT_LEAD.email, template, NotificationKind.FOLLOW_UP),
    ]
    assert {(n.due_at, n.condition, n.with_ack_link) for n in notices} == {
        (NOW, Condition.ALWAYS, False)
    }


def test_an_oos_release_offer_asks_the_physicians_and_tells_the_others(
    mercy: EffectiveAgreement,
) -> None:
    notices = plan_follow_up(
        mercy, EventType.DISPOSITION, Disposition.OOS_RELEASE_OFFERED, [COORDINATOR, PHYSICIAN], NOW
    )

    assert [(n.recipient_email, n.template, n.kind, n.with_ack_link) for n in notices] == [
        (PHYSICIAN.email, "oos_release_decision", NotificationKind.DECISION, True),
        (COORDINATOR.email, "disposition_notice", NotificationKind.FOLLOW_UP, False),
    ]


def test_without_a_physician_the_coordinators_are_asked_to_decide(
    mercy: EffectiveAgreement,
) -> None:
    no_physician = mercy.model_copy(
        update={"contacts": [c for c in mercy.contacts if CenterRole.PHYSICIAN not in c.roles]}
    )

    notices = plan_follow_up(
        no_physician, EventType.DISPOSITION, Disposition.OOS_RELEASE_OFFERED, [LAB], NOW
    )

    assert [(n.recipient_email, n.kind) for n in notices] == [
        (COORDINATOR.email, NotificationKind.DECISION),
        (LAB.email, NotificationKind.FOLLOW_UP),
    ]


@pytest.mark.parametrize(
    "disposition", [d for d in Disposition if d is not Disposition.OOS_RELEASE_OFFERED]
)
def test_other_dispositions_ask_nobody_to_decide(
    mercy: EffectiveAgreement, disposition: Disposition
) -> None:
    notices = plan_follow_up(mercy, EventType.DISPOSITION, disposition, [COORDINATOR], NOW)
    assert [(n.recipient_email, n.template) for n in notices] == [
        (COORDINATOR.email, "disposition_notice")
    ]


def test_nobody_told_means_no_notices(mercy: EffectiveAgreement) -> None:
    assert plan_follow_up(mercy, EventType.UPDATE, None, [], NOW) == []


# --- key-date steps ------------------------------------------------------------------------------


def test_a_moved_lymphodepletion_date_re_plans_the_liaison_alert_before_acknowledgement(
    mercy: EffectiveAgreement,
) -> None:
    result = plan_key_date_steps(
        mercy, facts(date(2026, 12, 7)), {KeyDate.LYMPHODEPLETION_START}, False, set(), NOW
    )

    # 48 h before Monday Dec 7 in Chicago: Saturday Dec 5, 00:00 CST
    assert {(n.recipient_email, n.due_at, n.anchor) for n in result.notifications} == {
        (
            "navigator@mercy.example",
            datetime(2026, 12, 5, 6, 0, tzinfo=UTC),
            KeyDate.LYMPHODEPLETION_START,
        ),
        (
            "patient-services@manufacturer.example",
            datetime(2026, 12, 5, 6, 0, tzinfo=UTC),
            KeyDate.LYMPHODEPLETION_START,
        ),
    }
    assert {n.kind for n in result.notifications} == {NotificationKind.PATIENT}


def test_a_moved_date_does_not_re_plan_a_step_already_sent(mercy: EffectiveAgreement) -> None:
    sent = {(NotificationKind.PATIENT, 1)}
    result = plan_key_date_steps(
        mercy, facts(date(2026, 12, 7)), {KeyDate.LYMPHODEPLETION_START}, False, sent, NOW
    )
    assert result.notifications == []


def test_after_acknowledgement_the_unacknowledged_alert_is_not_planned_again(
    mercy: EffectiveAgreement,
) -> None:
    result = plan_key_date_steps(
        mercy, facts(date(2026, 12, 7)), {KeyDate.LYMPHODEPLETION_START}, True, set(), NOW
    )
    assert result.notifications == []


def test_a_date_no_step_depends_on_moves_nothing(mercy: EffectiveAgreement) -> None:
    result = plan_key_date_steps(
        mercy, facts(date(2026, 12, 7)), {KeyDate.PLANNED_INFUSION}, False, set(), NOW
    )
    assert result.notifications == []


def test_a_moved_date_already_within_the_window_is_due_at_once(mercy: EffectiveAgreement) -> None:
    result = plan_key_date_steps(
        mercy, facts(date(2026, 11, 25)), {KeyDate.LYMPHODEPLETION_START}, False, set(), NOW
    )
    assert {n.due_at for n in result.notifications} == {NOW}
