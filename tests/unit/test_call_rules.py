"""Call rules and the clock, as pure functions and as an author writes them: which calls an
incident needs and why, whom to call, by when, and the next instant a rule starts to hold."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from oos_notify.agreements.business_time import CenterCalendar
from oos_notify.agreements.config import DEFAULT_SEVERITY_RULES, CallRule, load_agreements
from oos_notify.agreements.vocabulary import CenterRole, EventType, KeyDate, Severity
from oos_notify.incidents.call_tasks import call_due, needed_calls, numbers_to_call
from oos_notify.incidents.clock_rules import next_crossing
from tests.unit.config_files import find, problems_of

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"
MERCY = load_agreements(REPO_CONFIG).effective("mercy-general-main")
CALENDAR = CenterCalendar.of(MERCY)
NOW = datetime(2026, 11, 24, 22, 12, tzinfo=UTC)  # Tuesday 16:12 in Chicago
SATURDAY = {KeyDate.LYMPHODEPLETION_START: date(2026, 11, 28)}


def rule(**fields: object) -> CallRule:
    return CallRule.model_validate(
        {"name": "r", "call": "manufacturer:medical_affairs", "escalate": ["manufacturer:qa"]}
        | fields
    )


def test_any_condition_of_a_rule_is_enough_and_says_why() -> None:
    rules = [
        rule(name="critical", severity=["critical"]),
        rule(name="near", lymphodepletion_within="72h"),
        rule(name="infused", after_infusion=True),
    ]

    needs = needed_calls(rules, Severity.CRITICAL, SATURDAY, True, CALENDAR, NOW)

    assert [(n.rule.name, n.reason) for n in needs] == [
        ("critical", "the incident is critical"),
        ("infused", "the product was infused"),
    ]
    later = needed_calls(rules, Severity.MAJOR, SATURDAY, False, CALENDAR, NOW + timedelta(hours=8))
    assert [(n.rule.name, n.reason) for n in later] == [
        ("near", "lymphodepletion starts within 72h")
    ]


def test_the_next_crossing_is_where_a_rule_starts_to_hold() -> None:
    # Lymphodepletion Saturday 00:00 in Chicago: the 72-hour rule holds from Wednesday 00:00
    crossing = next_crossing(
        DEFAULT_SEVERITY_RULES,
        [],
        EventType.RELEASE_FAILURE,
        Severity.MAJOR,
        ["viability"],
        SATURDAY,
        CALENDAR,
        NOW,
    )
    assert crossing == datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
    # Already critical: no severity rule can raise it, and no call rule waits
    assert (
        next_crossing(
            DEFAULT_SEVERITY_RULES,
            [],
            EventType.RELEASE_FAILURE,
            Severity.CRITICAL,
            ["viability"],
            SATURDAY,
            CALENDAR,
            NOW,
        )
        is None
    )
    # A call rule with its own reach has its own instant
    assert next_crossing(
        DEFAULT_SEVERITY_RULES,
        [rule(lymphodepletion_within="96h")],
        EventType.RELEASE_FAILURE,
        Severity.CRITICAL,
        ["viability"],
        SATURDAY,
        CALENDAR,
        NOW - timedelta(days=1),
    ) == datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


def test_the_numbers_start_with_the_on_call_line_and_the_deadline_is_the_promise() -> None:
    numbers = numbers_to_call(MERCY, [CenterRole.PHYSICIAN, CenterRole.COORDINATOR])
    assert [(n["role"], n["phone"]) for n in numbers] == [
        (None, "+1 312 555 0100"),
        ("physician", "+1 312 555 0144"),
        ("coordinator", "+1 312 555 0142"),
    ]
    assert call_due(MERCY, None, Severity.CRITICAL, NOW) == NOW + timedelta(hours=1)
    assert call_due(MERCY, rule(severity=["major"], within="20m"), Severity.MAJOR, NOW) == (
        NOW + timedelta(minutes=20)
    )


def test_a_call_rule_without_a_condition_or_calling_from_the_center_is_refused(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    shutil.copytree(REPO_CONFIG, config)
    plan = config / "plans" / "urgent.yaml"
    plan.write_text(
        plan.read_text()
        + "calls:\n"
        + '  - {name: always, call: "manufacturer:medical_affairs", escalate: [coordinator]}\n'
        + "  - {name: center, severity: [critical], call: coordinator, escalate: [coordinator]}\n"
    )

    problems = problems_of(config)

    find(problems, "config/plans/urgent.yaml", "calls[0]", "a call rule needs a condition")
    find(problems, "config/plans/urgent.yaml", "calls[1]", "not the center's coordinator")
