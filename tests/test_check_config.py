"""The ``oos-notify`` command as an operator runs it: check-config and serve on bad config."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import command_env

ROOT = Path(__file__).resolve().parents[1]
OOS_NOTIFY = str(Path(sys.executable).parent / "oos-notify")
OVERRIDE = Path("centers/mercy-general-main/release_failure_initial/body.html")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A working directory with private copies of the example config and templates."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    return tmp_path


def run(workspace: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = command_env(workspace)
    return subprocess.run(
        [OOS_NOTIFY, *args],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} should occur once in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def problem_lines(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if line.startswith("  ")]


def test_a_valid_config_passes(workspace: Path) -> None:
    result = run(workspace, "check-config")
    assert result.returncode == 0, result.stderr
    assert "config is valid: 2 health systems, 3 sites, 2 plans" in result.stdout
    assert "invalid" not in result.stderr


def test_a_broken_plan_is_reported_with_file_and_field(workspace: Path) -> None:
    edit(
        workspace / "config/plans/standard.yaml",
        "notify: [coordinator_backup, physician]",
        "notify: [nurse, physician]",
    )
    edit(workspace / "config/plans/urgent.yaml", "{after: 30m,", "{after: 30x,")
    result = run(workspace, "check-config")
    assert result.returncode == 2
    assert result.stderr.startswith("config is invalid")
    lines = problem_lines(result.stderr)
    assert any(
        line.startswith("config/plans/standard.yaml: steps[1].notify[0]: unknown role 'nurse'")
        for line in lines
    ), lines
    assert any(
        line.startswith("config/plans/urgent.yaml: steps[1].after: invalid duration '30x'")
        for line in lines
    ), lines
    assert "Traceback" not in result.stderr


def test_an_undefined_variable_is_refused(workspace: Path) -> None:
    subject = workspace / "templates/escalation_reminder/subject.txt"
    subject.write_text(subject.read_text() + " {{ incident.patient_name }}\n")
    result = run(workspace, "check-config")
    assert result.returncode != 0
    lines = problem_lines(result.stderr)
    assert len(lines) == 3  # every site uses the reminder
    for center in ("mercy-general-main", "mercy-west", "rhein-uk-bonn"):
        assert any(
            "escalation_reminder/subject.txt" in line
            and "patient_name" in line
            and f"(for {center})" in line
            for line in lines
        ), lines


@pytest.mark.parametrize(
    ("line_3", "fragment"),
    [
        pytest.param("<p>{{ recipient.name </p>", "(for mercy-general-main)", id="syntax-error"),
        pytest.param("<p>{{ incident.patient_name }}</p>", "patient_name", id="undefined-variable"),
    ],
)
def test_an_error_in_a_center_override_names_the_override_and_its_line(
    workspace: Path, line_3: str, fragment: str
) -> None:
    write(
        workspace / "templates" / OVERRIDE,
        f'{{% extends "_layout.html" %}}\n{{% block intro %}}\n{line_3}\n{{% endblock %}}\n',
    )
    result = run(workspace, "check-config")
    assert result.returncode != 0
    [line] = problem_lines(result.stderr)
    assert str(OVERRIDE) in line
    assert "line 3" in line
    assert fragment in line


def test_a_template_that_fails_while_rendering_is_reported_not_a_crash(workspace: Path) -> None:
    write(
        workspace / "templates" / OVERRIDE,
        '{% extends "_layout.html" %}\n{% block intro %}<p>{{ incident.severity + 1 }}</p>'
        "{% endblock %}\n",
    )
    result = run(workspace, "check-config")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = problem_lines(result.stderr)
    assert str(OVERRIDE) in line


def test_a_plan_naming_a_missing_template_is_refused(workspace: Path) -> None:
    edit(
        workspace / "config/plans/standard.yaml",
        "template: escalation_final}",
        "template: escalation_finale}",
    )
    result = run(workspace, "check-config")
    assert result.returncode != 0
    lines = problem_lines(result.stderr)
    assert lines
    assert all("template 'escalation_finale'" in line for line in lines), lines
    assert all("needs subject.txt, body.txt and body.html" in line for line in lines)


def test_an_override_folder_for_an_unknown_center_is_refused(workspace: Path) -> None:
    subject = (workspace / "templates/release_failure_initial/subject.txt").read_text()
    write(
        workspace / "templates/centers/mercy-nowhere/release_failure_initial/subject.txt", subject
    )
    result = run(workspace, "check-config")
    assert result.returncode != 0
    [line] = problem_lines(result.stderr)
    assert "centers/mercy-nowhere" in line
    assert "no site or health system has this id" in line


def test_a_missing_templates_folder_is_refused(workspace: Path) -> None:
    shutil.rmtree(workspace / "templates")
    result = run(workspace, "check-config")
    assert result.returncode != 0
    assert "templates folder not found" in result.stderr


def test_serve_refuses_a_broken_config_quickly_with_the_same_messages(workspace: Path) -> None:
    edit(
        workspace / "config/plans/standard.yaml",
        "notify: [coordinator_backup, physician]",
        "notify: [nurse, physician]",
    )
    edit(workspace / "config/health_systems/mercy-health.yaml", "America/Chicago", "Mars/Base")
    checked = run(workspace, "check-config")
    served = run(workspace, "serve", timeout=20)
    assert served.returncode != 0
    assert checked.returncode != 0
    assert problem_lines(served.stderr) == problem_lines(checked.stderr)
    lines = problem_lines(served.stderr)
    assert any(line.startswith("config/plans/standard.yaml: steps[1].notify[0]:") for line in lines)
    assert any(
        line.startswith("config/health_systems/mercy-health.yaml: timezone:") for line in lines
    )


MERCY = "config/health_systems/mercy-health.yaml"
RHEIN = "config/health_systems/rhein-klinikum.yaml"
STANDARD = "config/plans/standard.yaml"
MANUFACTURER = "config/manufacturer.yaml"


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        pytest.param(
            MERCY,
            'start: "08:00"',
            'start: "18:00"',
            f"{MERCY}: business_hours: start 18:00 must be before end 17:00",
            id="hours-that-start-after-they-end",
        ),
        pytest.param(
            RHEIN,
            'end: "16:30"',
            'end: "07:30"',
            f"{RHEIN}: business_hours: start 07:30 must be before end 07:30",
            id="hours-that-end-when-they-start",
        ),
        pytest.param(
            RHEIN,
            "days: [mon, tue, wed, thu, fri]",
            "days: [mon, tue, wed, thu, fri, tue]",
            f"{RHEIN}: business_hours: a day is listed twice",
            id="a-day-listed-twice",
        ),
        pytest.param(
            STANDARD,
            "{after: 0m, notify: [coordinator, physician, cell_lab]",
            "{after: 0m, before: lymphodepletion_start, by: 48h, "
            "notify: [coordinator, physician, cell_lab]",
            f"{STANDARD}: steps[0]: a step has either 'after' or 'before', not both",
            id="a-step-with-after-and-before",
        ),
        pytest.param(
            STANDARD,
            "before: lymphodepletion_start, by: 48h,",
            "before: lymphodepletion_start,",
            f"{STANDARD}: patient_communication[1]: 'before' needs 'by'",
            id="before-without-by",
        ),
        pytest.param(
            MERCY,
            "holidays: {country: US}",
            "holidays: {country: XX}",
            f"{MERCY}: holidays: no public-holiday calendar for country 'XX'",
            id="an-unknown-holiday-country",
        ),
        pytest.param(
            RHEIN,
            "subdivision: NW",
            "subdivision: QQ",
            f"{RHEIN}: holidays: DE has no subdivision 'QQ'; known: ",
            id="an-unknown-holiday-subdivision",
        ),
        pytest.param(
            MERCY,
            "holidays: {country: US}",
            "holidays: {subdivision: TX}",
            f"{MERCY}: holidays: a subdivision needs its country",
            id="a-subdivision-without-its-country",
        ),
        pytest.param(
            MERCY,
            "email: ct-coord@mercy.example",
            'email: "ct-coord,evil@mercy.example"',
            f"{MERCY}: sites[0].contacts[0].email: not an email address: ",
            id="an-address-with-two-local-parts",
        ),
        pytest.param(
            MERCY,
            "email: rx-director@mercy.example",
            'email: "rx-director@mercy.example, evil@attacker.example"',
            f"{MERCY}: contacts[0].email: not an email address: ",
            id="two-addresses-in-one",
        ),
        pytest.param(
            MANUFACTURER,
            "email: qa-release@manufacturer.example",
            'email: "qa-release@manufacturer.example?cc=evil%40attacker.example"',
            f"{MANUFACTURER}: contacts[0].email: not an email address: ",
            id="an-address-with-a-query",
        ),
        pytest.param(
            RHEIN,
            "email: zelltherapie@ukb.example",
            "email: zelltherapie-jörg@ukb.example",
            f"{RHEIN}: sites[0].contacts[0].email: not an address this service can send to: "
            "the part before the @ has non-ASCII characters, which need SMTPUTF8",
            id="a-non-ascii-mailbox-name",
        ),
        pytest.param(
            MERCY,
            "name: Cell Therapy Coordinator",
            'name: "Cell Therapy Coordinator\\r\\nBcc: attacker@evil.example"',
            f"{MERCY}: sites[0].contacts[0].name: must be one line of text without control "
            "characters; it contains U+000D",
            id="a-contact-name-with-a-line-break",
        ),
        pytest.param(
            MANUFACTURER,
            "name: Example Therapeutics",
            'name: "Example Therapeutics\\u2028Bcc: attacker@evil.example"',
            f"{MANUFACTURER}: name: must be one line of text without control characters; "
            "it contains U+2028",
            id="a-manufacturer-name-with-a-line-separator",
        ),
        pytest.param(
            MERCY,
            'name: "Dr. Lena Ortiz, CAR-T attending"',
            'name: "\\u202egnidnetta T-RAC ,ztirO aneL .rD"',
            f"{MERCY}: sites[0].contacts[2].name: must not contain characters that change the "
            "direction of text; it contains U+202E",
            id="a-contact-name-that-shows-reversed",
        ),
    ],
)
def test_a_bad_agreement_is_refused_naming_the_file_and_the_field(
    workspace: Path, file: str, old: str, new: str, expected: str
) -> None:
    # Given one mistake in one agreement file
    edit(workspace / file, old, new)
    # When the operator checks the config
    result = run(workspace, "check-config")
    # Then it is refused with one line that names the file and the field
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("config is invalid")
    assert "Traceback" not in result.stderr
    lines = problem_lines(result.stderr)
    assert len([line for line in lines if line.startswith(expected)]) == 1, lines
    # and only there: an invalid plan is not reported again where health systems name it
    assert len(lines) == 1, lines


def test_the_delivery_failure_report_is_rendered_for_every_site(workspace: Path) -> None:
    body = workspace / "templates/delivery_failure/body.txt"
    body.write_text(body.read_text().replace("failed_delivery.reply", "failed_delivery.bounce"))
    result = run(workspace, "check-config")
    assert result.returncode == 2
    lines = problem_lines(result.stderr)
    assert len(lines) == 3, lines
    assert all("delivery_failure/body.txt" in line and "bounce" in line for line in lines)


def test_a_missing_delivery_failure_report_is_refused(workspace: Path) -> None:
    shutil.rmtree(workspace / "templates/delivery_failure")
    result = run(workspace, "check-config")
    assert result.returncode == 2
    lines = problem_lines(result.stderr)
    assert lines and all("template 'delivery_failure'" in line for line in lines), lines


def test_a_from_address_that_is_not_one_mailbox_is_refused_naming_the_variable(
    workspace: Path,
) -> None:
    env = command_env(workspace) | {"OOS_NOTIFY_MAIL_FROM": "oos@x.example, evil@attacker.example"}
    for command in ("check-config", "serve"):
        result = subprocess.run(
            [OOS_NOTIFY, command],
            cwd=workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert "OOS_NOTIFY_MAIL_FROM: Value error, not an email address" in result.stderr
        assert "evil@attacker.example" not in result.stderr
        assert "Traceback" not in result.stderr
