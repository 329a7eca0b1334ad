"""``serve`` renders every template for every site before it starts, as ``check-config`` does,
and skips that on a restart only when the config, the templates and the code are the very ones
that passed: whatever changed is checked again, and a broken edit still keeps the service down."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from oos_notify.agreements.config import ConfigError
from oos_notify.ops.config_check import inputs_digest
from oos_notify.settings import Settings
from oos_notify.web.app import create_app
from tests.conftest import CONFIG_DIR, TEMPLATES_DIR, service_settings

SKIPPED = "config and templates unchanged since they passed the check: not rendered"


@pytest.fixture
def files(tmp_path: Path) -> Settings:
    """Settings over copies of the config and templates that a test may edit."""
    shutil.copytree(CONFIG_DIR, tmp_path / "config")
    shutil.copytree(TEMPLATES_DIR, tmp_path / "templates")
    return service_settings(
        tmp_path, None, config_dir=tmp_path / "config", templates_dir=tmp_path / "templates"
    )


def start(settings: Settings, caplog: pytest.LogCaptureFixture) -> bool:
    """Build the app as ``serve`` does; whether it skipped rendering the templates."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="oos_notify"):
        create_app(settings).state.services.engine.dispose()
    return any(record.getMessage() == SKIPPED for record in caplog.records)


def test_a_restart_with_nothing_changed_does_not_render_again(
    files: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    assert start(files, caplog) is False
    assert start(files, caplog) is True


def test_a_template_broken_after_a_good_start_keeps_the_service_down(
    files: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    start(files, caplog)
    body = files.templates_dir / "release_failure_initial" / "body.txt"
    body.write_text(body.read_text().replace("{{ recipient.name }}", "{{ recipient.nickname }}"))

    with pytest.raises(ConfigError) as refused:
        start(files, caplog)

    assert any("release_failure_initial/body.txt" in str(p) for p in refused.value.problems)


def test_a_site_override_added_later_is_rendered_at_the_next_start(
    files: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    start(files, caplog)
    override = files.templates_dir / "centers" / "mercy-west" / "incident_update"
    override.mkdir(parents=True)
    (override / "subject.txt").write_text("{% if %}\n")
    for part in ("body.txt", "body.html"):
        shutil.copy(files.templates_dir / "incident_update" / part, override / part)

    with pytest.raises(ConfigError) as refused:
        start(files, caplog)

    assert any("mercy-west/incident_update/subject.txt" in str(p) for p in refused.value.problems)


def test_a_failed_check_is_never_remembered_as_passed(
    files: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    subject = files.templates_dir / "incident_resolved" / "subject.txt"
    good = subject.read_text()
    subject.write_text("{{ 1 + }}\n")
    for _ in range(2):
        with pytest.raises(ConfigError):
            start(files, caplog)

    subject.write_text(good)
    assert start(files, caplog) is False


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda config, templates: _append(config / "manufacturer.yaml"), id="config"),
        pytest.param(lambda config, templates: _append(templates / "_layout.txt"), id="layout"),
        pytest.param(
            lambda config, templates: (
                (templates / "centers").mkdir(exist_ok=True)
                or (templates / "centers" / "notes.txt").write_text("x")
            ),
            id="new file",
        ),
        pytest.param(
            lambda config, templates: (templates / "_layout.txt").rename(templates / "_l.txt"),
            id="renamed file",
        ),
    ],
)
def test_the_digest_changes_with_any_config_or_template_file(
    files: Settings, edit: Callable[[Path, Path], object]
) -> None:
    config, templates = files.config_dir, files.templates_dir
    before = inputs_digest(config, templates)
    assert inputs_digest(config, templates) == before

    edit(config, templates)

    assert inputs_digest(config, templates) != before


def _append(path: Path) -> None:
    path.write_text(path.read_text() + "\n")
