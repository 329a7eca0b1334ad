"""Loading config/: every mistake an author can make is reported with its file and field."""

from __future__ import annotations

import shutil
import time
from datetime import date
from pathlib import Path

import pytest

from oos_notify.agreements.config import (
    Agreements,
    BusinessHours,
    ConfigError,
    load_agreements,
)
from oos_notify.agreements.durations import Duration
from oos_notify.agreements.vocabulary import EventType, Severity
from tests.unit.config_files import edit, find, problems_of

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"
STANDARD = "config/plans/standard.yaml"
MERCY = "config/health_systems/mercy-health.yaml"
RHEIN = "config/health_systems/rhein-klinikum.yaml"


def with_config_prefix(relative: str) -> str:
    return f"config/{relative}"


# --- the example config -------------------------------------------------------------------------


def test_the_example_config_loads(config: Path) -> None:
    agreements = load_agreements(config)
    assert agreements.center_ids() == ["mercy-general-main", "mercy-west", "rhein-uk-bonn"]
    assert set(agreements.plans) == {"standard", "urgent"}
    assert agreements.files["standard"] == STANDARD
    assert agreements.files["mercy-health"] == MERCY


# --- one mistake at a time ----------------------------------------------------------------------


def test_an_unknown_role_in_a_plan_step(config: Path) -> None:
    edit(
        config,
        "plans/standard.yaml",
        "notify: [coordinator_backup, physician]",
        "notify: [nurse, physician]",
    )
    problem = find(problems_of(config), STANDARD, "steps[1].notify[0]", "unknown role 'nurse'")
    assert "coordinator_backup" in problem.message  # the known roles are listed
    assert "manufacturer:" in problem.message
    assert str(problem).startswith("config/plans/standard.yaml: steps[1].notify[0]: ")


def test_an_unknown_manufacturer_role(config: Path) -> None:
    edit(config, "plans/standard.yaml", '"manufacturer:account_lead"', '"manufacturer:ceo"')
    find(
        problems_of(config),
        STANDARD,
        "steps[2].notify[1]",
        "unknown manufacturer role 'manufacturer:ceo'",
        "manufacturer:account_lead",
    )


def test_an_unknown_time_zone(config: Path) -> None:
    edit(config, "health_systems/mercy-health.yaml", "America/Chicago", "America/Chicagoo")
    edit(config, "health_systems/mercy-health.yaml", "America/Denver", "Mars/Olympus_Mons")
    problems = problems_of(config)
    find(problems, MERCY, "timezone", "unknown time zone 'America/Chicagoo'", "IANA")
    find(problems, MERCY, "sites[1].timezone", "unknown time zone 'Mars/Olympus_Mons'")


def test_business_hours_that_start_after_they_end(config: Path) -> None:
    edit(config, "health_systems/mercy-health.yaml", 'start: "08:00"', 'start: "18:00"')
    find(problems_of(config), MERCY, "business_hours", "start 18:00 must be before end 17:00")


def test_a_step_with_both_after_and_before(config: Path) -> None:
    edit(
        config,
        "plans/standard.yaml",
        "{after: 0m, notify: [coordinator, physician, cell_lab]",
        "{after: 0m, before: lymphodepletion_start, by: 48h, "
        "notify: [coordinator, physician, cell_lab]",
    )
    find(problems_of(config), STANDARD, "steps[0]", "either 'after' or 'before', not both")


def test_before_without_by(config: Path) -> None:
    edit(
        config,
        "plans/standard.yaml",
        "before: lymphodepletion_start, by: 48h,",
        "before: lymphodepletion_start,",
    )
    find(problems_of(config), STANDARD, "patient_communication[1]", "'before' needs 'by'")


def test_an_invalid_duration(config: Path) -> None:
    edit(config, "plans/standard.yaml", "{after: 2h,", "{after: 2x,")
    problem = find(problems_of(config), STANDARD, "steps[1].after", "invalid duration '2x'")
    for form in ("45s", "30m", "2h", "1d", "1bd"):
        assert form in problem.message


def test_a_site_plan_that_does_not_exist(config: Path) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        "    timezone: America/Denver\n",
        "    timezone: America/Denver\n    plans: {release_failure: fast-track}\n",
    )
    find(
        problems_of(config),
        MERCY,
        "sites[1].plans.release_failure",
        "no plan 'fast-track' in plans/",
    )


def test_an_unknown_manufacturer_contact_pin(config: Path) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        "{account_lead: al-midwest}",
        "{account_lead: al-nowhere}",
    )
    find(
        problems_of(config),
        MERCY,
        "manufacturer_contacts.account_lead",
        "no manufacturer contact 'al-nowhere' in manufacturer.yaml",
    )


def test_a_system_pin_to_a_contact_without_the_role(config: Path) -> None:
    # The QA desk is no account lead: the final escalation would silently reach nobody
    edit(
        config,
        "health_systems/mercy-health.yaml",
        "{account_lead: al-midwest}",
        "{account_lead: qa-desk}",
    )
    find(
        problems_of(config),
        MERCY,
        "manufacturer_contacts.account_lead",
        "'qa-desk' does not have the role account_lead",
    )


def test_a_site_pin_to_a_contact_without_the_role(config: Path) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        "    timezone: America/Denver\n",
        "    timezone: America/Denver\n    manufacturer_contacts: {account_lead: ps-hub}\n",
    )
    find(
        problems_of(config),
        MERCY,
        "sites[1].manufacturer_contacts.account_lead",
        "'ps-hub' does not have the role account_lead",
    )


def test_a_role_that_no_contact_fills_at_a_site(config: Path) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        "      - {id: mgm-lab, name: Cell Processing Lab, email: celllab@mercy.example, "
        "roles: [cell_lab]}\n",
        "",
    )
    problems = problems_of(config)
    for event_type, plan in (("release_failure", "standard"), ("late_result", "urgent")):
        find(
            problems,
            MERCY,
            f"sites[0].plans.{event_type}",
            f"plan '{plan}' notifies cell_lab",
            "'mercy-general-main'",
        )
    assert not [p for p in problems if "mercy-west" in p.message]


def test_a_manufacturer_role_with_two_holders_and_no_pin(config: Path) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        "manufacturer_contacts: {account_lead: al-midwest}\n",
        "",
    )
    problems = problems_of(config)
    for site in (0, 1):
        problem = find(
            problems,
            MERCY,
            f"sites[{site}].manufacturer_contacts",
            "plan 'standard' notifies manufacturer:account_lead",
        )
        assert "al-midwest, al-europe" in problem.message
        assert "manufacturer_contacts: {account_lead: <id>}" in problem.message
    assert not [p for p in problems if p.file == RHEIN]


def test_the_same_site_id_in_two_files(config: Path) -> None:
    text = (config / "health_systems/rhein-klinikum.yaml").read_text(encoding="utf-8")
    copy = text.replace("id: rhein-klinikum", "id: rhein-zwei")
    (config / "health_systems/rhein-zwei.yaml").write_text(copy, encoding="utf-8")
    find(
        problems_of(config),
        "config/health_systems/rhein-zwei.yaml",
        "sites[0].id",
        f"site 'rhein-uk-bonn' is also in {RHEIN}",
    )


def test_the_same_plan_id_in_two_files(config: Path) -> None:
    shutil.copy(config / "plans/standard.yaml", config / "plans/zz-standard.yaml")
    find(
        problems_of(config),
        "config/plans/zz-standard.yaml",
        "id",
        f"plan 'standard' is also in {STANDARD}",
    )


def test_a_yaml_syntax_error(config: Path) -> None:
    edit(
        config, "health_systems/mercy-health.yaml", "name: Mercy Health\n", "name: [Mercy Health\n"
    )
    problem = find(problems_of(config), MERCY, "", "not valid YAML")
    assert "line" in problem.message


def test_yaml_aliases_are_refused_before_they_expand(config: Path) -> None:
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    (config / "plans/lol.yaml").write_text("id: lol\n" + "\n".join(levels) + "\n")
    started = time.process_time()  # CPU, which the machine's other load does not stretch
    problem = find(
        problems_of(config), "config/plans/lol.yaml", "", "aliases (*name) are not allowed"
    )
    assert time.process_time() - started < 2
    assert "line 3" in problem.message  # where the first alias is


def test_a_key_written_twice_is_refused_not_silently_overwritten(config: Path) -> None:
    # Given a plan whose second 'steps' would silently replace the first
    text = (config / "plans/standard.yaml").read_text(encoding="utf-8")
    (config / "plans/standard.yaml").write_text(
        text
        + "steps:\n  - {after: 0m, notify: [coordinator], template: release_failure_initial}\n",
        encoding="utf-8",
    )
    find(problems_of(config), STANDARD, "", "the key 'steps' appears twice")


def test_a_file_that_is_a_list(config: Path) -> None:
    (config / "plans/list.yaml").write_text("- id: x\n- id: y\n", encoding="utf-8")
    find(problems_of(config), "config/plans/list.yaml", "", "expected a mapping")


def test_an_empty_health_systems_folder(config: Path) -> None:
    for path in (config / "health_systems").iterdir():
        path.unlink()
    find(problems_of(config), "config/health_systems", "", "no health system file found")


def test_a_missing_config_folder(tmp_path: Path) -> None:
    find(problems_of(tmp_path / "nowhere"), str(tmp_path / "nowhere"), "", "not found")


def test_a_missing_manufacturer_file(config: Path) -> None:
    (config / "manufacturer.yaml").unlink()
    find(problems_of(config), "config/manufacturer.yaml", "", "file not found")


def test_every_problem_of_the_folder_is_reported_at_once(config: Path) -> None:
    edit(config, "plans/standard.yaml", "{after: 2h,", "{after: 2x,")
    edit(
        config,
        "plans/urgent.yaml",
        "notify: [coordinator_backup, program_director]",
        "notify: [nurse]",
    )
    edit(config, "health_systems/mercy-health.yaml", "America/Chicago", "America/Chicagoo")
    edit(
        config,
        "health_systems/rhein-klinikum.yaml",
        "{account_lead: al-europe}",
        "{account_lead: al-nowhere}",
    )
    edit(config, "manufacturer.yaml", "email: qa-release@manufacturer.example", "email: qa-release")
    problems = problems_of(config)
    find(problems, STANDARD, "steps[1].after", "invalid duration '2x'")
    find(problems, "config/plans/urgent.yaml", "steps[1].notify[0]", "unknown role 'nurse'")
    find(problems, MERCY, "timezone", "America/Chicagoo")
    find(problems, "config/manufacturer.yaml", "contacts[0].email", "not an email address")
    assert len(problems) >= 4
    assert len({p.file for p in problems}) >= 4


# --- the effective agreement -------------------------------------------------------------------


def test_a_site_inherits_its_health_system_defaults(config: Path) -> None:
    west = load_agreements(config).effective("mercy-west")
    assert west.timezone == "America/Denver"
    assert west.health_system_id == "mercy-health"
    assert west.ack_link_valid_for == Duration(14, "d")
    assert west.notify_within == {
        Severity.CRITICAL: Duration(1, "h"),
        Severity.MAJOR: Duration(4, "h"),
        Severity.MINOR: Duration(1, "bd"),
    }
    assert west.business_hours == BusinessHours()  # mon-fri 08:00-17:00 from the system
    assert west.holidays.country == "US"
    assert [c.id for c in west.system_contacts] == [
        "mh-pharmacy-dir",
        "mh-program-dir",
        "mh-pharmacy",
        "mh-quality",
    ]
    assert west.on_call_phone == "+1 303 555 0199"  # its own, not the system's
    assert west.oos_pathway is not None and west.oos_pathway.id == "us-expanded-access"
    assert {t: p.id for t, p in west.plans.items()} == {
        EventType.RELEASE_FAILURE: "standard",
        EventType.LATE_RESULT: "urgent",
    }


def test_a_site_keeps_the_time_zone_and_defaults_of_its_own_system(config: Path) -> None:
    bonn = load_agreements(config).effective("rhein-uk-bonn")
    assert bonn.timezone == "Europe/Berlin"
    assert bonn.ack_link_valid_for == Duration(10, "d")
    assert str(bonn.business_hours.start) == "07:30:00"


def test_a_site_overrides_one_promise_and_inherits_the_others(config: Path) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        "    timezone: America/Denver\n",
        "    timezone: America/Denver\n    defaults: {notify_within: {major: 2h}}\n",
    )
    west = load_agreements(config).effective("mercy-west")
    assert west.notify_within == {
        Severity.CRITICAL: Duration(1, "h"),
        Severity.MAJOR: Duration(2, "h"),
        Severity.MINOR: Duration(1, "bd"),
    }
    assert west.ack_link_valid_for == Duration(14, "d")


def test_an_unknown_center_is_a_key_error(config: Path) -> None:
    with pytest.raises(KeyError):
        load_agreements(config).effective("mercy-nowhere")


def versions(agreements: Agreements) -> dict[str, str]:
    return {c: agreements.effective(c).version() for c in agreements.center_ids()}


def test_the_version_is_stable_for_the_same_agreement(config: Path) -> None:
    first = versions(load_agreements(config))
    assert versions(load_agreements(config)) == first
    assert len(set(first.values())) == 3
    edit(config, "health_systems/mercy-health.yaml", "# A US health system", "# A health system")
    assert versions(load_agreements(config)) == first  # comments are not the agreement


def test_the_version_changes_with_a_site_contact_email(config: Path) -> None:
    before = versions(load_agreements(config))
    edit(
        config,
        "health_systems/mercy-health.yaml",
        "ct-coord@mercy.example",
        "ct-coordination@mercy.example",
    )
    after = versions(load_agreements(config))
    assert after["mercy-general-main"] != before["mercy-general-main"]
    assert after["mercy-west"] == before["mercy-west"]
    assert after["rhein-uk-bonn"] == before["rhein-uk-bonn"]


# --- holidays and severity rules across system and site ------------------------------------------


def test_a_site_with_its_own_closure_dates_keeps_its_systems_public_holidays(config: Path) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        "    timezone: America/Denver\n",
        "    timezone: America/Denver\n    holidays: [2026-12-24]\n",
    )
    west = load_agreements(config).effective("mercy-west")
    assert (west.holidays.country, west.holidays.dates) == ("US", [date(2026, 12, 24)])


def test_a_site_in_another_country_uses_its_own_public_holidays(config: Path) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        "    timezone: America/Denver\n",
        "    timezone: America/Denver\n    holidays: {country: CA, subdivision: AB}\n",
    )
    west = load_agreements(config).effective("mercy-west")
    assert (west.holidays.country, west.holidays.subdivision) == ("CA", "AB")


def test_holidays_the_center_works_must_be_holidays_of_its_country(config: Path) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        "holidays: {country: US}",
        "holidays: {country: US, working: [Columbus Day, Boxing Day]}",
    )
    with pytest.raises(ConfigError) as raised:
        load_agreements(config)
    [problem] = raised.value.problems
    assert (problem.file, problem.field) == (MERCY, "holidays")
    assert "'Boxing Day' is not a public holiday of US" in problem.message


def test_an_empty_list_of_severity_rules_is_refused(config: Path) -> None:
    edit(
        config,
        "health_systems/mercy-health.yaml",
        "  ack_link_valid_for: 14d\n",
        "  ack_link_valid_for: 14d\n  severity_rules: []\n",
    )
    with pytest.raises(ConfigError) as raised:
        load_agreements(config)
    [problem] = raised.value.problems
    assert (problem.file, problem.field) == (MERCY, "defaults.severity_rules")
