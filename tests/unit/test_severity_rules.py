"""Severity of events that come without one: the agreement's rules, the first that matches wins."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from oos_notify.agreements.business_time import CenterCalendar
from oos_notify.agreements.config import (
    DEFAULT_SEVERITY_RULES,
    EffectiveAgreement,
    SeverityRule,
    load_agreements,
)
from oos_notify.agreements.durations import parse_duration
from oos_notify.agreements.vocabulary import EventType, KeyDate, Severity
from oos_notify.incidents.planning import derive_severity
from tests.unit.config_files import edit, find, problems_of

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"
MERCY_FILE = "config/health_systems/mercy-health.yaml"
MANUFACTURER_FILE = "config/manufacturer.yaml"
CHICAGO = ZoneInfo("America/Chicago")
BERLIN = ZoneInfo("Europe/Berlin")

LATE = EventType.LATE_RESULT
RELEASE = EventType.RELEASE_FAILURE
LYMPHODEPLETION = KeyDate.LYMPHODEPLETION_START
INFUSION = KeyDate.PLANNED_INFUSION

SAFETY_RULE = "late safety result (sterility, mycoplasma, endotoxin)"
LATE_RULE = "late result after release"
LYMPHODEPLETION_RULE = "lymphodepletion starts within 72 hours"
FALLBACK_RULE = "release failure"
NO_MATCH = "no severity rule matched: major"

NOW = datetime(2026, 11, 24, 15, 12, tzinfo=UTC)  # Tue 09:12 in Chicago, 16:12 in Berlin


@pytest.fixture(scope="module")
def mercy() -> EffectiveAgreement:
    return load_agreements(REPO_CONFIG).effective("mercy-general-main")


@pytest.fixture(scope="module")
def mercy_calendar(mercy: EffectiveAgreement) -> CenterCalendar:
    return CenterCalendar.of(mercy)


@pytest.fixture(scope="module")
def bonn_calendar() -> CenterCalendar:
    return CenterCalendar.of(load_agreements(REPO_CONFIG).effective("rhein-uk-bonn"))


def chi(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=CHICAGO)


def rule(name: str, severity: str, **conditions: object) -> SeverityRule:
    return SeverityRule.model_validate({"name": name, "severity": severity, **conditions})


def derive(
    calendar: CenterCalendar,
    event_type: EventType,
    failed: list[str] | None = None,
    key_dates: Mapping[KeyDate, date] | None = None,
    now: datetime = NOW,
    rules: list[SeverityRule] | tuple[SeverityRule, ...] = DEFAULT_SEVERITY_RULES,
) -> tuple[Severity, str]:
    return derive_severity(rules, event_type, failed or [], key_dates or {}, calendar, now)


# --- the default rules ------------------------------------------------------------------------


def test_the_example_centers_use_the_built_in_rules(mercy: EffectiveAgreement) -> None:
    assert mercy.severity_rules == list(DEFAULT_SEVERITY_RULES)
    assert [r.name for r in mercy.severity_rules] == [
        SAFETY_RULE,
        LATE_RULE,
        LYMPHODEPLETION_RULE,
        FALLBACK_RULE,
    ]


@pytest.mark.parametrize(
    ("event_type", "failed", "expected"),
    [
        pytest.param(LATE, ["sterility"], (Severity.CRITICAL, SAFETY_RULE), id="late-sterility"),
        pytest.param(
            LATE, [" Sterility "], (Severity.CRITICAL, SAFETY_RULE), id="late-sterility-any-case"
        ),
        pytest.param(
            LATE, ["viability", "MYCOPLASMA"], (Severity.CRITICAL, SAFETY_RULE), id="late-myco"
        ),
        pytest.param(LATE, ["Endotoxin"], (Severity.CRITICAL, SAFETY_RULE), id="late-endotoxin"),
        pytest.param(LATE, ["viability"], (Severity.CRITICAL, LATE_RULE), id="late-viability"),
        pytest.param(LATE, [], (Severity.CRITICAL, LATE_RULE), id="late-without-attributes"),
        pytest.param(
            LATE, ["sterile"], (Severity.CRITICAL, LATE_RULE), id="late-no-partial-attribute-match"
        ),
        pytest.param(
            RELEASE,
            ["sterility"],
            (Severity.MAJOR, FALLBACK_RULE),
            id="release-failure-sterility-is-major",
        ),
        pytest.param(
            RELEASE, ["viability"], (Severity.MAJOR, FALLBACK_RULE), id="release-failure-is-major"
        ),
    ],
)
def test_default_rules_by_event_type_and_failed_attribute(
    mercy_calendar: CenterCalendar,
    event_type: EventType,
    failed: list[str],
    expected: tuple[Severity, str],
) -> None:
    # lymphodepletion six days away: too far for the 72 h rule
    key_dates = {LYMPHODEPLETION: date(2026, 11, 30)}
    assert derive(mercy_calendar, event_type, failed, key_dates) == expected


@pytest.mark.parametrize(
    ("now", "key_dates", "expected"),
    [
        # 2026-11-30 00:00 CST is 06:00Z
        pytest.param(
            datetime(2026, 11, 27, 7, 0, tzinfo=UTC),
            {LYMPHODEPLETION: date(2026, 11, 30)},
            (Severity.CRITICAL, LYMPHODEPLETION_RULE),
            id="71h-before-local-midnight",
        ),
        pytest.param(
            datetime(2026, 11, 27, 6, 0, tzinfo=UTC),
            {LYMPHODEPLETION: date(2026, 11, 30)},
            (Severity.CRITICAL, LYMPHODEPLETION_RULE),
            id="exactly-72h-is-within",
        ),
        pytest.param(
            datetime(2026, 11, 27, 5, 59, tzinfo=UTC),
            {LYMPHODEPLETION: date(2026, 11, 30)},
            (Severity.MAJOR, FALLBACK_RULE),
            id="72h-and-a-minute",
        ),
        pytest.param(
            datetime(2026, 11, 27, 5, 0, tzinfo=UTC),
            {LYMPHODEPLETION: date(2026, 11, 30)},
            (Severity.MAJOR, FALLBACK_RULE),
            id="73h-is-not",
        ),
        pytest.param(
            NOW,
            {LYMPHODEPLETION: date(2026, 11, 24)},
            (Severity.CRITICAL, LYMPHODEPLETION_RULE),
            id="today",
        ),
        pytest.param(
            NOW,
            {LYMPHODEPLETION: date(2026, 11, 20)},
            (Severity.CRITICAL, LYMPHODEPLETION_RULE),
            id="already-started",
        ),
        pytest.param(
            NOW,
            {INFUSION: date(2026, 11, 25), KeyDate.APHERESIS: date(2026, 11, 1)},
            (Severity.MAJOR, FALLBACK_RULE),
            id="other-key-dates-do-not-count",
        ),
        pytest.param(NOW, {}, (Severity.MAJOR, FALLBACK_RULE), id="no-key-dates"),
        # the US clocks go back on Sun 2026-11-01: three calendar days before Monday's midnight
        # are 73 elapsed hours, and the window is elapsed time
        pytest.param(
            chi(2026, 10, 30, 0, 0),
            {LYMPHODEPLETION: date(2026, 11, 2)},
            (Severity.MAJOR, FALLBACK_RULE),
            id="three-days-across-dst-end-are-73h",
        ),
        # ... and they go forward on Sun 2026-03-08: three days are 71 hours
        pytest.param(
            chi(2026, 3, 6, 0, 0),
            {LYMPHODEPLETION: date(2026, 3, 9)},
            (Severity.CRITICAL, LYMPHODEPLETION_RULE),
            id="three-days-across-dst-start-are-71h",
        ),
    ],
)
def test_lymphodepletion_within_72_hours_of_local_midnight_is_critical(
    mercy_calendar: CenterCalendar,
    now: datetime,
    key_dates: dict[KeyDate, date],
    expected: tuple[Severity, str],
) -> None:
    assert derive(mercy_calendar, RELEASE, ["viability"], key_dates, now) == expected


def test_a_late_result_is_critical_by_its_own_rule_whatever_the_key_dates(
    mercy_calendar: CenterCalendar,
) -> None:
    soon = {LYMPHODEPLETION: date(2026, 11, 25)}
    assert derive(mercy_calendar, LATE, ["viability"], soon) == (Severity.CRITICAL, LATE_RULE)


def test_the_key_date_is_the_centers_local_midnight(
    mercy_calendar: CenterCalendar, bonn_calendar: CenterCalendar
) -> None:
    # Given lymphodepletion on Fri 2026-11-27, and "now" Tue 2026-11-24 00:30Z
    # Then Berlin's midnight (Thu 23:00Z) is 70.5 h away and Chicago's (Fri 06:00Z) 77.5 h away
    now = datetime(2026, 11, 24, 0, 30, tzinfo=UTC)
    key_dates = {LYMPHODEPLETION: date(2026, 11, 27)}
    assert derive(bonn_calendar, RELEASE, [], key_dates, now) == (
        Severity.CRITICAL,
        LYMPHODEPLETION_RULE,
    )
    assert derive(mercy_calendar, RELEASE, [], key_dates, now) == (Severity.MAJOR, FALLBACK_RULE)


# --- custom rules -------------------------------------------------------------------------------


def test_the_first_matching_rule_wins(mercy_calendar: CenterCalendar) -> None:
    rules = [
        rule("any release failure is minor here", "minor", event_type="release_failure"),
        rule("sterility is critical", "critical", failed_attribute="sterility"),
    ]
    assert derive(mercy_calendar, RELEASE, ["sterility"], rules=rules) == (
        Severity.MINOR,
        "any release failure is minor here",
    )
    assert derive(mercy_calendar, LATE, ["sterility"], rules=rules) == (
        Severity.CRITICAL,
        "sterility is critical",
    )
    assert derive(mercy_calendar, RELEASE, ["sterility"], rules=rules[::-1]) == (
        Severity.CRITICAL,
        "sterility is critical",
    )


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param([], id="no-rules"),
        pytest.param(
            [rule("late results", "critical", event_type="late_result")], id="none-matches"
        ),
        pytest.param(
            [
                rule(
                    "release failure in sterility",
                    "critical",
                    event_type="release_failure",
                    failed_attribute="sterility",
                )
            ],
            id="only-one-condition-holds",
        ),
    ],
)
def test_no_matching_rule_means_major_and_says_so(
    mercy_calendar: CenterCalendar, rules: list[SeverityRule]
) -> None:
    assert derive(mercy_calendar, RELEASE, ["viability"], rules=rules) == (
        Severity.MAJOR,
        NO_MATCH,
    )


def test_a_rule_without_conditions_matches_everything(mercy_calendar: CenterCalendar) -> None:
    rules = [rule("everything is minor", "minor")]
    for event_type in (RELEASE, LATE):
        assert derive(mercy_calendar, event_type, rules=rules) == (
            Severity.MINOR,
            "everything is minor",
        )


def test_failed_attributes_match_whatever_their_case_on_either_side(
    mercy_calendar: CenterCalendar,
) -> None:
    rules = [rule("identity", "critical", failed_attribute=["CD19 Identity", "Sterility"])]
    for written in ("cd19 identity", " CD19 IDENTITY ", "sTeRiLiTy"):
        assert derive(mercy_calendar, RELEASE, ["viability", written], rules=rules) == (
            Severity.CRITICAL,
            "identity",
        ), written
    assert derive(mercy_calendar, RELEASE, ["cd19"], rules=rules) == (Severity.MAJOR, NO_MATCH)


def test_any_of_several_key_dates_within_their_windows_matches(
    mercy_calendar: CenterCalendar,
) -> None:
    rules = [
        rule(
            "patient about to be treated",
            "critical",
            key_date_within={"lymphodepletion_start": "48h", "planned_infusion": "5d"},
        )
    ]
    infusion_soon = {LYMPHODEPLETION: date(2026, 12, 10), INFUSION: date(2026, 11, 28)}
    neither = {LYMPHODEPLETION: date(2026, 12, 10), INFUSION: date(2026, 12, 12)}
    assert derive(mercy_calendar, RELEASE, [], infusion_soon, rules=rules)[0] is Severity.CRITICAL
    assert derive(mercy_calendar, RELEASE, [], neither, rules=rules) == (Severity.MAJOR, NO_MATCH)


@pytest.mark.parametrize(
    ("lymphodepletion", "expected"),
    [
        # Wed 2026-11-25 10:00 + 2 business days = Mon 11-30 10:00 (Thanksgiving and the
        # weekend are skipped): Monday's midnight is inside the window, Tuesday's is not
        pytest.param(date(2026, 11, 30), Severity.CRITICAL, id="monday"),
        pytest.param(date(2026, 12, 1), Severity.MAJOR, id="tuesday"),
    ],
)
def test_a_window_in_business_days_skips_the_centers_holidays(
    mercy_calendar: CenterCalendar, lymphodepletion: date, expected: Severity
) -> None:
    rules = [
        rule(
            "two business days to lymphodepletion",
            "critical",
            key_date_within={"lymphodepletion_start": "2bd"},
        )
    ]
    now = chi(2026, 11, 25, 10, 0)
    result = derive(mercy_calendar, RELEASE, [], {LYMPHODEPLETION: lymphodepletion}, now, rules)
    assert result[0] is expected


def test_yaml_shorthands_give_the_same_rule() -> None:
    short = rule("s", "critical", event_type="late_result", failed_attribute="sterility")
    long = rule("s", "critical", event_type=["late_result"], failed_attribute=["sterility"])
    assert short == long
    assert short.key_date_within == {}
    assert rule("k", "major", key_date_within={"apheresis": "1bd"}).key_date_within == {
        KeyDate.APHERESIS: parse_duration("1bd")
    }


# --- rules from config/: manufacturer, health system, site --------------------------------------


MANUFACTURER_RULES = """\
severity_rules:
  - {name: manufacturer says critical, severity: critical}
"""
SYSTEM_ANCHOR = "  notify_within: {critical: 1h, major: 4h, minor: 1bd}\n"
SYSTEM_RULES = """\
  severity_rules:
    - name: mercy late sterility
      severity: critical
      event_type: late_result
      failed_attribute: [Sterility]
    - {name: mercy otherwise minor, severity: minor}
"""
SITE_ANCHOR = "    name: Mercy General — Main Campus\n"
SITE_RULES = """\
    defaults:
      severity_rules:
        - {name: main campus lymphodepletion, severity: critical, key_date_within: {lymphodepletion_start: 4d}}
"""  # noqa: E501


def rule_names(config: Path) -> dict[str, list[str]]:
    agreements = load_agreements(config)
    return {
        center: [r.name for r in agreements.effective(center).severity_rules]
        for center in agreements.center_ids()
    }


def set_manufacturer_rules(config: Path, rules: str | None) -> None:
    """Replace the top-level ``severity_rules`` of manufacturer.yaml (``None``: drop them)."""
    path = config / "manufacturer.yaml"
    text = re.sub(
        r"^severity_rules:\n(?:[ -].*\n?)*", "", path.read_text(encoding="utf-8"), flags=re.M
    )
    path.write_text(text + (rules or ""), encoding="utf-8")


def add_manufacturer_rules(config: Path) -> None:
    set_manufacturer_rules(config, MANUFACTURER_RULES)


def test_without_rules_anywhere_the_built_in_ones_apply(config: Path) -> None:
    set_manufacturer_rules(config, None)
    assert "severity_rules" not in yaml.safe_load((config / "manufacturer.yaml").read_text())
    built_in = [r.name for r in DEFAULT_SEVERITY_RULES]
    assert rule_names(config) == {
        "mercy-general-main": built_in,
        "mercy-west": built_in,
        "rhein-uk-bonn": built_in,
    }


def test_manufacturer_rules_apply_at_every_center(config: Path) -> None:
    add_manufacturer_rules(config)
    assert rule_names(config) == {
        "mercy-general-main": ["manufacturer says critical"],
        "mercy-west": ["manufacturer says critical"],
        "rhein-uk-bonn": ["manufacturer says critical"],
    }


def test_health_system_rules_override_the_manufacturers_for_its_sites(config: Path) -> None:
    add_manufacturer_rules(config)
    edit(config, "health_systems/mercy-health.yaml", SYSTEM_ANCHOR, SYSTEM_ANCHOR + SYSTEM_RULES)
    mercy_rules = ["mercy late sterility", "mercy otherwise minor"]
    assert rule_names(config) == {
        "mercy-general-main": mercy_rules,
        "mercy-west": mercy_rules,
        "rhein-uk-bonn": ["manufacturer says critical"],
    }


def test_site_rules_override_the_health_systems(config: Path) -> None:
    set_manufacturer_rules(config, None)
    edit(config, "health_systems/mercy-health.yaml", SYSTEM_ANCHOR, SYSTEM_ANCHOR + SYSTEM_RULES)
    edit(config, "health_systems/mercy-health.yaml", SITE_ANCHOR, SITE_ANCHOR + SITE_RULES)
    assert rule_names(config) == {
        "mercy-general-main": ["main campus lymphodepletion"],
        "mercy-west": ["mercy late sterility", "mercy otherwise minor"],
        "rhein-uk-bonn": [r.name for r in DEFAULT_SEVERITY_RULES],
    }
    # a site's own defaults do not drop what it inherits otherwise
    main = load_agreements(config).effective("mercy-general-main")
    assert main.ack_link_valid_for == parse_duration("14d")
    assert main.notify_within[Severity.MAJOR] == parse_duration("4h")


def test_rules_from_yaml_derive_severity(config: Path) -> None:
    edit(config, "health_systems/mercy-health.yaml", SYSTEM_ANCHOR, SYSTEM_ANCHOR + SYSTEM_RULES)
    edit(config, "health_systems/mercy-health.yaml", SITE_ANCHOR, SITE_ANCHOR + SITE_RULES)
    agreements = load_agreements(config)
    main, west = agreements.effective("mercy-general-main"), agreements.effective("mercy-west")

    def severity_at(agreement: EffectiveAgreement, event_type: EventType, failed: list[str]) -> str:
        severity, name = derive_severity(
            agreement.severity_rules,
            event_type,
            failed,
            {LYMPHODEPLETION: date(2026, 11, 27)},
            CenterCalendar.of(agreement),
            NOW,
        )
        return f"{severity}: {name}"

    assert severity_at(west, LATE, ["sterility"]) == "critical: mercy late sterility"
    assert severity_at(west, LATE, ["viability"]) == "minor: mercy otherwise minor"
    assert severity_at(west, RELEASE, ["sterility"]) == "minor: mercy otherwise minor"
    # the site's one rule: lymphodepletion in 3 days is within its 4 days
    assert severity_at(main, RELEASE, []) == "critical: main campus lymphodepletion"


def test_rules_are_part_of_the_agreement_version(config: Path) -> None:
    before = load_agreements(config).effective("mercy-west").version()
    edit(config, "health_systems/mercy-health.yaml", SYSTEM_ANCHOR, SYSTEM_ANCHOR + SYSTEM_RULES)
    assert load_agreements(config).effective("mercy-west").version() != before


# --- invalid rules are refused with file and field ------------------------------------------------


def with_system_rule(config: Path, yaml_rule: str) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        SYSTEM_ANCHOR,
        SYSTEM_ANCHOR + "  severity_rules:\n    - " + yaml_rule + "\n",
    )


@pytest.mark.parametrize(
    ("yaml_rule", "field", "fragments"),
    [
        pytest.param(
            "{name: r, severity: urgent}",
            "defaults.severity_rules[0].severity",
            ("'critical', 'major' or 'minor'",),
            id="unknown-severity",
        ),
        pytest.param(
            "{name: r, severity: major, event_type: update}",
            "defaults.severity_rules[0]",
            ("release_failure and late_result", "not update"),
            id="update-event",
        ),
        pytest.param(
            "{name: r, severity: major, event_type: [late_result, resolved]}",
            "defaults.severity_rules[0]",
            ("not resolved",),
            id="resolved-event-in-a-list",
        ),
        pytest.param(
            "{name: r, severity: major, event_type: recall}",
            "defaults.severity_rules[0].event_type[0]",
            ("release_failure",),
            id="unknown-event-type",
        ),
        pytest.param(
            "{name: r, severity: major, key_date_within: {lymphodepletion_start: 3 days}}",
            "defaults.severity_rules[0].key_date_within.lymphodepletion_start",
            ("invalid duration '3 days'", "1bd"),
            id="bad-duration",
        ),
        pytest.param(
            "{name: r, severity: major, key_date_within: {lymphodepletion_start: 72}}",
            "defaults.severity_rules[0].key_date_within.lymphodepletion_start",
            ("a duration must be text",),
            id="duration-without-unit",
        ),
        pytest.param(
            "{severity: major}",
            "defaults.severity_rules[0].name",
            ("Field required",),
            id="no-name",
        ),
        pytest.param(
            "{name: r, severity: major, when: always}",
            "defaults.severity_rules[0].when",
            ("Extra inputs are not permitted",),
            id="unknown-condition",
        ),
    ],
)
def test_an_invalid_system_rule_is_refused_with_file_and_field(
    config: Path, yaml_rule: str, field: str, fragments: tuple[str, ...]
) -> None:
    with_system_rule(config, yaml_rule)
    problem = find(problems_of(config), MERCY_FILE, field, *fragments)
    assert str(problem).startswith(f"{MERCY_FILE}: {field}: ")


def test_an_invalid_site_rule_names_the_site(config: Path) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        SITE_ANCHOR,
        SITE_ANCHOR + "    defaults: {severity_rules: [{name: r, severity: severe}]}\n",
    )
    find(problems_of(config), MERCY_FILE, "sites[0].defaults.severity_rules[0].severity")


def test_an_invalid_manufacturer_rule_names_the_manufacturer_file(config: Path) -> None:
    set_manufacturer_rules(
        config,
        "severity_rules:\n  - {name: ok, severity: minor}\n"
        "  - {name: r, severity: major, event_type: withdrawn}\n",
    )
    find(problems_of(config), MANUFACTURER_FILE, "severity_rules[1]", "not withdrawn")
