"""Who hears of a follow-up event, and which key-date steps move: pure planning, fixed clock."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from oos_notify.agreements.config import EffectiveAgreement, load_agreements
from oos_notify.agreements.vocabulary import CenterRole, EventType, KeyDate, Severity
from oos_notify.incidents.planning import (
    IncidentFacts,
    deciders,
    plan_decision_request,
    plan_follow_up,
    plan_key_date_steps,
    plan_round_again,
)
from oos_notify.store.lifecycle import Condition, NotificationKind
from oos_notify.store.outbox import Addressee

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
NOW = datetime(2026, 11, 24, 19, 30, tzinfo=UTC)
COORDINATOR = Addressee(
    "mgm-coord", "coordinator", "Cell Therapy Coordinator", "ct-coord@mercy.example"
)
LAB = Addressee("mgm-lab", "cell_lab", "Cell Processing Lab", "celllab@mercy.example")
PHYSICIAN = Addressee("mgm-md", "physician", "Treating Physician Group", "ct-md@mercy.example")
PHYSICIAN_DECIDER = Addressee(
    "mgm-md", "physician", "Dr. Lena Ortiz, CAR-T attending", "ct-md@mercy.example"
)
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
    event_type: EventType, template: str
) -> None:
    # The coordinator was told twice (first notice and a reminder), once in other letter case
    shouting = Addressee(
        COORDINATOR.contact_id, "coordinator", "Coordinator", "CT-COORD@mercy.example"
    )
    told = [COORDINATOR, LAB, shouting, ACCOUNT_LEAD]

    notices = plan_follow_up(event_type, told, NOW)

    assert [(n.recipient_email, n.template, n.kind) for n in notices] == [
        (COORDINATOR.email, template, NotificationKind.FOLLOW_UP),
        (LAB.email, template, NotificationKind.FOLLOW_UP),
        (ACCOUNT_LEAD.email, template, NotificationKind.FOLLOW_UP),
    ]
    assert {(n.due_at, n.condition, n.with_ack_link) for n in notices} == {
        (NOW, Condition.ALWAYS, False)
    }


def test_those_told_otherwise_get_no_follow_up_notice() -> None:
    notices = plan_follow_up(
        EventType.DISPOSITION, [COORDINATOR, PHYSICIAN], NOW, told_otherwise=["CT-MD@mercy.example"]
    )
    assert [n.recipient_email for n in notices] == [COORDINATOR.email]


def test_an_oos_release_offer_asks_the_individual_decider_and_tells_quality_pharmacy_and_ra(
    mercy: EffectiveAgreement,
) -> None:
    rule = mercy.plans[EventType.RELEASE_FAILURE].decision
    assert rule is not None
    asked = deciders(mercy, rule)

    result = plan_decision_request(mercy, rule, asked, facts(date(2026, 11, 30)), NOW)

    # Only the physician marked decider is asked, with a link; nobody else decides
    assert asked == [PHYSICIAN_DECIDER]
    now_due = [n for n in result.notifications if n.due_at == NOW]
    assert [(n.recipient_email, n.template, n.kind, n.with_ack_link) for n in now_due] == [
        ("ct-md@mercy.example", "oos_release_decision", NotificationKind.DECISION, True),
        ("ct-quality@mercy.example", "disposition_notice", NotificationKind.FOLLOW_UP, False),
        ("ids-pharmacy@mercy.example", "disposition_notice", NotificationKind.FOLLOW_UP, False),
        (
            "regulatory@manufacturer.example",
            "disposition_notice",
            NotificationKind.FOLLOW_UP,
            False,
        ),
    ]
    assert result.skipped == []


def test_a_missing_decision_is_escalated_72_hours_before_lymphodepletion(
    mercy: EffectiveAgreement,
) -> None:
    rule = mercy.plans[EventType.RELEASE_FAILURE].decision
    assert rule is not None

    result = plan_decision_request(
        mercy, rule, deciders(mercy, rule), facts(date(2026, 11, 30)), NOW
    )

    # 72 h before Monday Nov 30 in Chicago: Friday Nov 27, 00:00 CST, whatever the hours
    overdue = [n for n in result.notifications if n.kind is NotificationKind.DECISION_OVERDUE]
    assert [(n.recipient_email, n.role, n.with_ack_link) for n in overdue] == [
        ("ct-md@mercy.example", "physician", True),
        ("ct-director@mercy.example", "program_director", False),
        ("ct-coord@mercy.example", "coordinator", False),
        ("medical-affairs@manufacturer.example", "manufacturer:medical_affairs", False),
    ]
    assert {(n.due_at, n.condition, n.anchor, n.template) for n in overdue} == {
        (
            datetime(2026, 11, 27, 6, 0, tzinfo=UTC),
            Condition.UNDECIDED,
            KeyDate.LYMPHODEPLETION_START,
            "decision_overdue",
        )
    }


def test_without_the_key_date_the_decision_deadline_is_skipped_and_says_why(
    mercy: EffectiveAgreement,
) -> None:
    rule = mercy.plans[EventType.RELEASE_FAILURE].decision
    assert rule is not None
    no_dates = IncidentFacts(EventType.RELEASE_FAILURE, Severity.MAJOR, {})

    result = plan_decision_request(mercy, rule, deciders(mercy, rule), no_dates, NOW)

    assert NotificationKind.DECISION_OVERDUE not in {n.kind for n in result.notifications}
    [skipped] = result.skipped
    assert "no key date lymphodepletion_start" in skipped.reason


def test_a_shared_physician_mailbox_is_never_asked_and_coordinators_never_decide(
    mercy: EffectiveAgreement,
) -> None:
    group = [
        c.model_copy(update={"decider": False}) if CenterRole.PHYSICIAN in c.roles else c
        for c in mercy.contacts
    ]
    no_decider = mercy.model_copy(update={"contacts": group})
    rule = mercy.plans[EventType.RELEASE_FAILURE].decision
    assert rule is not None

    assert deciders(no_decider, rule) == []


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


# --- severity rising: the round again on the faster clock -----------------------------------------


def test_a_round_that_became_critical_is_planned_again_around_the_clock(
    mercy: EffectiveAgreement,
) -> None:
    # Opened Tue 16:12 CST as major: the reminder waited for Wed 09:12 (business hours)
    opened = datetime(2026, 11, 24, 22, 12, tzinfo=UTC)
    now = datetime(2026, 11, 24, 22, 40, tzinfo=UTC)
    critical = IncidentFacts(
        EventType.RELEASE_FAILURE,
        Severity.CRITICAL,
        {KeyDate.LYMPHODEPLETION_START: date(2026, 11, 26)},
    )

    result = plan_round_again(mercy, critical, opened, {(NotificationKind.ESCALATION, 0)}, now)

    # Then the steps not yet sent count every hour from the opening: 18:12 and 20:12 CST, and
    # the liaison alert (48 h before Thursday, already past) is due now
    due = {(n.kind, n.level): n.due_at for n in result.notifications}
    assert due == {
        (NotificationKind.ESCALATION, 1): datetime(2026, 11, 25, 0, 12, tzinfo=UTC),
        (NotificationKind.ESCALATION, 2): datetime(2026, 11, 25, 2, 12, tzinfo=UTC),
        (NotificationKind.PATIENT, 1): now,
    }
    assert {n.condition for n in result.notifications} == {Condition.UNACKNOWLEDGED}
