"""Who is told what, and when, for an incident at a center of the example config."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from oos_notify.agreements.business_time import CenterCalendar
from oos_notify.agreements.config import (
    Agreements,
    Contact,
    EffectiveAgreement,
    SeverityRule,
    load_agreements,
)
from oos_notify.agreements.vocabulary import CenterRole, EventType, KeyDate, Severity
from oos_notify.incidents.planning import (
    IncidentFacts,
    PlanResult,
    SkippedStep,
    derive_severity,
    plan_acknowledged,
    plan_opening,
)
from oos_notify.store.lifecycle import Condition, NotificationKind

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"

ESCALATION = NotificationKind.ESCALATION
PATIENT = NotificationKind.PATIENT
LYMPHODEPLETION = {KeyDate.LYMPHODEPLETION_START: date(2026, 11, 30)}


@pytest.fixture(scope="module")
def agreements() -> Agreements:
    return load_agreements(CONFIG_DIR)


@pytest.fixture(scope="module")
def mercy(agreements: Agreements) -> EffectiveAgreement:
    return agreements.effective("mercy-general-main")


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def facts(
    severity: Severity = Severity.MAJOR,
    event_type: EventType = EventType.RELEASE_FAILURE,
    key_dates: dict[KeyDate, date] | None = None,
) -> IncidentFacts:
    return IncidentFacts(
        event_type=event_type,
        severity=severity,
        key_dates=LYMPHODEPLETION if key_dates is None else key_dates,
    )


def schedule(result: PlanResult) -> list[tuple[str, int, str, str, datetime]]:
    """(kind, level, email, template, due) of each planned notification, in plan order."""
    return [
        (str(n.kind), n.level, n.recipient_email, n.template, n.due_at)
        for n in result.notifications
    ]


def due_by_level(result: PlanResult, kind: NotificationKind) -> dict[int, set[datetime]]:
    levels: dict[int, set[datetime]] = {}
    for n in result.notifications:
        if n.kind is kind:
            levels.setdefault(n.level, set()).add(n.due_at)
    return levels


# --- the standard plan at Mercy General, America/Chicago -------------------------------------


def test_a_tuesday_morning_incident_escalates_two_and_four_hours_later(
    mercy: EffectiveAgreement,
) -> None:
    opened = utc(2026, 11, 24, 15, 12)  # Tue 09:12 CST
    result = plan_opening(mercy, facts(), opened)
    assert schedule(result) == [
        ("escalation", 0, "ct-coord@mercy.example", "release_failure_initial", opened),
        ("escalation", 0, "ct-md@mercy.example", "release_failure_initial", opened),
        ("escalation", 0, "celllab@mercy.example", "release_failure_initial", opened),
        (
            "escalation",
            1,
            "ct-coord2@mercy.example",
            "escalation_reminder",
            utc(2026, 11, 24, 17, 12),
        ),
        ("escalation", 1, "ct-md@mercy.example", "escalation_reminder", utc(2026, 11, 24, 17, 12)),
        (
            "escalation",
            2,
            "rx-director@mercy.example",
            "escalation_final",
            utc(2026, 11, 24, 19, 12),
        ),
        (
            "escalation",
            2,
            "al-midwest@manufacturer.example",
            "escalation_final",
            utc(2026, 11, 24, 19, 12),
        ),
        (
            "patient",
            1,
            "navigator@mercy.example",
            "patient_liaison_urgent",
            utc(2026, 11, 28, 6, 0),
        ),
        (
            "patient",
            1,
            "patient-services@manufacturer.example",
            "patient_liaison_urgent",
            utc(2026, 11, 28, 6, 0),
        ),
    ]
    assert result.skipped == []
    assert {n.condition for n in result.notifications} == {Condition.UNACKNOWLEDGED}


def test_an_incident_late_in_the_day_escalates_the_next_business_morning(
    mercy: EffectiveAgreement,
) -> None:
    opened = utc(2026, 11, 24, 22, 0)  # Tue 16:00 CST: one business hour left
    result = plan_opening(mercy, facts(), opened)
    assert due_by_level(result, ESCALATION) == {
        0: {opened},
        1: {utc(2026, 11, 25, 15, 0)},  # Wed 09:00 CST
        2: {utc(2026, 11, 25, 17, 0)},  # Wed 11:00 CST
    }


def test_a_friday_evening_incident_escalates_on_monday(mercy: EffectiveAgreement) -> None:
    opened = utc(2026, 11, 20, 23, 30)  # Fri 17:30 CST, after closing
    result = plan_opening(mercy, facts(), opened)
    assert due_by_level(result, ESCALATION) == {
        0: {opened},  # the first notice is not held back
        1: {utc(2026, 11, 23, 16, 0)},  # Mon 10:00 CST
        2: {utc(2026, 11, 23, 18, 0)},  # Mon 12:00 CST
    }


def test_a_critical_incident_ignores_business_hours(mercy: EffectiveAgreement) -> None:
    opened = utc(2026, 11, 20, 23, 30)  # Fri 17:30 CST
    result = plan_opening(mercy, facts(Severity.CRITICAL), opened)
    assert due_by_level(result, ESCALATION) == {
        0: {opened},
        1: {utc(2026, 11, 21, 1, 30)},
        2: {utc(2026, 11, 21, 3, 30)},
    }


def test_business_hours_are_those_of_the_site_time_zone(agreements: Agreements) -> None:
    west = agreements.effective("mercy-west")  # America/Denver
    opened = utc(2026, 11, 24, 23, 0)  # Tue 16:00 MST, 17:00 CST
    result = plan_opening(west, facts(), opened)
    assert due_by_level(result, ESCALATION)[1] == {utc(2026, 11, 25, 16, 0)}  # Wed 09:00 MST
    # the key date's midnight is Denver's too
    assert due_by_level(result, PATIENT) == {1: {utc(2026, 11, 28, 7, 0)}}


def test_the_rhein_site_counts_its_own_hours(agreements: Agreements) -> None:
    bonn = agreements.effective("rhein-uk-bonn")  # Europe/Berlin, 07:30-16:30
    opened = utc(2026, 11, 24, 15, 12)  # Tue 16:12 CET: 18 minutes left
    result = plan_opening(bonn, facts(), opened)
    assert due_by_level(result, ESCALATION) == {
        0: {opened},
        1: {utc(2026, 11, 25, 8, 12)},  # Wed 09:12 CET
        2: {utc(2026, 11, 25, 10, 12)},  # Wed 11:12 CET
    }


# --- who is reached ----------------------------------------------------------------------------


def final_step_emails(result: PlanResult) -> set[str]:
    return {
        n.recipient_email for n in result.notifications if n.kind is ESCALATION and n.level == 2
    }


def test_the_system_pharmacy_director_stands_in_when_the_site_has_none(
    agreements: Agreements,
) -> None:
    opened = utc(2026, 11, 24, 15, 12)
    main = plan_opening(agreements.effective("mercy-general-main"), facts(), opened)
    west = plan_opening(agreements.effective("mercy-west"), facts(), opened)
    assert final_step_emails(main) == {
        "rx-director@mercy.example",
        "al-midwest@manufacturer.example",
    }
    assert final_step_emails(west) == {
        "rx@mercy-west.example",
        "al-midwest@manufacturer.example",
    }


def test_the_account_lead_is_the_one_pinned_for_the_health_system(
    agreements: Agreements,
) -> None:
    opened = utc(2026, 11, 24, 15, 12)
    bonn = plan_opening(agreements.effective("rhein-uk-bonn"), facts(), opened)
    mercy = plan_opening(agreements.effective("mercy-general-main"), facts(), opened)
    leads = {
        name: [n.contact_id for n in result.notifications if n.role == "manufacturer:account_lead"]
        for name, result in (("bonn", bonn), ("mercy", mercy))
    }
    assert leads == {"bonn": ["al-europe"], "mercy": ["al-midwest"]}


def test_only_center_contacts_of_escalation_steps_get_an_ack_link(
    mercy: EffectiveAgreement,
) -> None:
    opening = plan_opening(mercy, facts(), utc(2026, 11, 24, 15, 12))
    for n in opening.notifications:
        center_escalation = n.kind is ESCALATION and not n.role.startswith("manufacturer:")
        assert n.with_ack_link is center_escalation, n
    # the patient liaison's urgent alert carries no link: it must not stop the escalation
    urgent = [n for n in opening.notifications if n.template == "patient_liaison_urgent"]
    assert urgent and not any(n.with_ack_link for n in urgent)
    acknowledged = plan_acknowledged(mercy, facts(), utc(2026, 11, 24, 16, 40))
    assert acknowledged.notifications
    assert not any(n.with_ack_link for n in acknowledged.notifications)


@pytest.mark.parametrize(
    "contacts",
    [
        pytest.param(
            [
                Contact(
                    id="mgm-coord",
                    name="Cell Therapy Coordinator",
                    email="ct-coord@mercy.example",
                    roles=[CenterRole.COORDINATOR, CenterRole.CELL_LAB],
                )
            ],
            id="one-contact-two-roles",
        ),
        pytest.param(
            [
                Contact(
                    id="mgm-coord",
                    name="Cell Therapy Coordinator",
                    email="ct-coord@mercy.example",
                    roles=[CenterRole.COORDINATOR],
                ),
                Contact(
                    id="mgm-lab",
                    name="Cell Processing Lab",
                    email="CT-Coord@Mercy.example",
                    roles=[CenterRole.CELL_LAB],
                ),
            ],
            id="two-entries-same-mailbox",
        ),
    ],
)
def test_the_same_mailbox_under_two_roles_of_a_step_gets_one_email(
    mercy: EffectiveAgreement, contacts: list[Contact]
) -> None:
    others = [c for c in mercy.contacts if c.id not in {"mgm-coord", "mgm-lab"}]
    agreement = mercy.model_copy(update={"contacts": [*contacts, *others]})
    result = plan_opening(agreement, facts(), utc(2026, 11, 24, 15, 12))
    first = [n for n in result.notifications if n.kind is ESCALATION and n.level == 0]
    assert [(n.role, n.contact_id, n.recipient_email) for n in first] == [
        ("coordinator", "mgm-coord", "ct-coord@mercy.example"),
        ("physician", "mgm-md", "ct-md@mercy.example"),
    ]


def test_one_person_in_two_steps_is_told_at_each_step(agreements: Agreements) -> None:
    # At Bonn the senior physician is also the program director: late results use the urgent plan
    bonn = agreements.effective("rhein-uk-bonn")
    opened = utc(2026, 11, 24, 3, 0)
    result = plan_opening(bonn, facts(Severity.CRITICAL, EventType.LATE_RESULT), opened)
    physician = [
        (n.level, n.role, n.due_at) for n in result.notifications if n.contact_id == "ukb-md"
    ]
    assert physician == [
        (0, "physician", opened),
        (1, "program_director", utc(2026, 11, 24, 3, 30)),
    ]


# --- the patient-communication step before a key date ------------------------------------------


def test_the_patient_step_is_due_48h_before_local_midnight_of_lymphodepletion(
    mercy: EffectiveAgreement,
) -> None:
    result = plan_opening(mercy, facts(), utc(2026, 11, 24, 15, 12))
    patient = [n for n in result.notifications if n.kind is PATIENT]
    # 2026-11-30 00:00 CST is 06:00Z; 48 hours earlier
    assert {n.due_at for n in patient} == {utc(2026, 11, 28, 6, 0)}
    assert [n.contact_id for n in patient] == ["mgm-nav", "ps-hub"]


def test_the_patient_step_is_skipped_visibly_without_the_key_date(
    mercy: EffectiveAgreement,
) -> None:
    without = facts(key_dates={KeyDate.PLANNED_INFUSION: date(2026, 12, 3)})
    result = plan_opening(mercy, without, utc(2026, 11, 24, 15, 12))
    assert not [n for n in result.notifications if n.kind is PATIENT]
    assert len(result.skipped) == 1
    [skipped] = result.skipped
    assert isinstance(skipped, SkippedStep)
    assert (skipped.kind, skipped.level) == (PATIENT, 1)
    assert "lymphodepletion_start" in skipped.reason
    assert set(due_by_level(result, ESCALATION)) == {0, 1, 2}


def test_the_patient_step_is_due_at_once_when_its_time_has_passed(
    mercy: EffectiveAgreement,
) -> None:
    opened = utc(2026, 11, 24, 15, 12)  # lymphodepletion tomorrow: 48 h before was yesterday
    soon = facts(key_dates={KeyDate.LYMPHODEPLETION_START: date(2026, 11, 25)})
    result = plan_opening(mercy, soon, opened)
    assert due_by_level(result, PATIENT) == {1: {opened}}


def test_an_acknowledgement_starts_the_patient_liaison_brief_at_once(
    mercy: EffectiveAgreement,
) -> None:
    acknowledged_at = utc(2026, 11, 24, 16, 40)
    result = plan_acknowledged(mercy, facts(), acknowledged_at)
    assert [
        (n.kind, n.level, n.role, n.contact_id, n.template, n.due_at, n.condition)
        for n in result.notifications
    ] == [
        (
            PATIENT,
            0,
            "patient_liaison",
            "mgm-nav",
            "patient_liaison_brief",
            acknowledged_at,
            Condition.ACKNOWLEDGED,
        )
    ]
    assert result.skipped == []


# --- severity of events that come without one ------------------------------------------------


TUESDAY_MORNING = utc(2026, 11, 24, 15, 12)  # Tue 09:12 CST


def severity_of(
    agreement: EffectiveAgreement,
    event_type: EventType,
    failed: list[str],
    key_dates: dict[KeyDate, date] | None = None,
    now: datetime = TUESDAY_MORNING,
) -> tuple[Severity, str]:
    return derive_severity(
        agreement.severity_rules,
        event_type,
        failed,
        LYMPHODEPLETION if key_dates is None else key_dates,
        CenterCalendar.of(agreement),
        now,
    )


def test_a_late_sterility_result_is_critical(mercy: EffectiveAgreement) -> None:
    severity, rule = severity_of(mercy, EventType.LATE_RESULT, [" Sterility "])
    assert severity is Severity.CRITICAL
    assert rule == "late safety result (sterility, mycoplasma, endotoxin)"


def test_any_late_result_is_critical(mercy: EffectiveAgreement) -> None:
    severity, rule = severity_of(mercy, EventType.LATE_RESULT, ["viability"])
    assert (severity, rule) == (Severity.CRITICAL, "late result after release")


def test_a_release_failure_without_severity_is_major(mercy: EffectiveAgreement) -> None:
    # lymphodepletion on 2026-11-30 is six days away
    severity, rule = severity_of(mercy, EventType.RELEASE_FAILURE, ["viability", "sterility"])
    assert (severity, rule) == (Severity.MAJOR, "release failure")


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # 2026-11-30 00:00 CST is 06:00Z
        pytest.param(utc(2026, 11, 27, 7, 0), Severity.CRITICAL, id="71h"),
        pytest.param(utc(2026, 11, 27, 5, 0), Severity.MAJOR, id="73h"),
    ],
)
def test_a_release_failure_72_hours_before_lymphodepletion_is_critical(
    mercy: EffectiveAgreement, now: datetime, expected: Severity
) -> None:
    severity, rule = severity_of(mercy, EventType.RELEASE_FAILURE, ["viability"], now=now)
    assert severity is expected
    if expected is Severity.CRITICAL:
        assert rule == "lymphodepletion starts within 72 hours"


def test_without_a_matching_rule_an_event_is_major_and_says_so(
    mercy: EffectiveAgreement,
) -> None:
    only_late = [
        SeverityRule(
            name="late results", severity=Severity.CRITICAL, event_type=[EventType.LATE_RESULT]
        )
    ]
    agreement = mercy.model_copy(update={"severity_rules": only_late})
    assert severity_of(agreement, EventType.RELEASE_FAILURE, ["viability"]) == (
        Severity.MAJOR,
        "no severity rule matched: major",
    )
