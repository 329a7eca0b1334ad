"""``serve`` renders every template for every site before it starts, as ``check-config`` does,
and skips that on a restart only when the config, the templates and the code are the very ones
that passed: whatever changed is checked again, and a broken edit still keeps the service down."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from oos_notify.agreements.config import ConfigError
from oos_notify.delivery.capture import free_port
from oos_notify.ops.config_check import inputs_digest
from oos_notify.settings import Settings
from oos_notify.web.app import create_app
from oos_notify.web.services import CHECKED, REUSED
from tests.conftest import CONFIG_DIR, TEMPLATES_DIR, service_settings
from tests.databases import needs_postgresql
from tests.served import COMMAND, ServedProcess


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
    return any(record.getMessage() == REUSED for record in caplog.records)


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


@needs_postgresql
def test_replicas_starting_together_render_the_templates_once(
    files: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Two processes of one version start at the same moment on one PostgreSQL database: one
    renders every template, the other waits for it and finds the check passed."""
    together = threading.Barrier(2)

    def replica() -> None:
        together.wait()
        create_app(files).state.services.engine.dispose()

    with caplog.at_level(logging.INFO, logger="oos_notify"), ThreadPoolExecutor(2) as pool:
        for started in [pool.submit(replica) for _ in range(2)]:
            started.result(timeout=300)

    said = [record.getMessage() for record in caplog.records]
    assert sum(message.startswith(CHECKED) for message in said) == 1, said
    assert said.count(REUSED) == 1, said


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


# --- the commands an operator runs -------------------------------------------------------------


@pytest.mark.parametrize("command", ["api", "worker"])
def test_a_restarted_process_keeps_the_check_and_a_changed_template_is_checked_again(
    files: Settings, tmp_path: Path, command: str
) -> None:
    """``oos-notify api`` and ``worker`` as an operator runs them: the first start renders every
    template, a restart with the same files does not, an edited template is rendered again at
    the next start, and a broken one keeps the process down with exit status 2."""
    process = ServedProcess(
        tmp_path,
        files.config_dir,
        free_port(),
        {"OOS_NOTIFY_TEMPLATES_DIR": str(files.templates_dir), "OOS_NOTIFY_LOG_FORMAT": "text"},
        command=command,
    )

    def started() -> str:
        """Start until ready and stop; what this start logged about the template check."""
        before = process.log.read_text() if process.log.exists() else ""
        try:
            process.start(deadline=300)  # a loaded CI machine: this test times nothing
        finally:
            process.stop()
        said = process.log.read_text()[len(before) :]
        assert (CHECKED in said) != (REUSED in said), said
        return "checked" if CHECKED in said else "reused"

    assert started() == "checked"
    assert started() == "reused"

    body = files.templates_dir / "release_failure_initial" / "body.txt"
    body.write_text(body.read_text() + "\nCall the QA desk with any question.\n")
    assert started() == "checked"
    assert started() == "reused"

    body.write_text(body.read_text().replace("{{ recipient.name }}", "{{ recipient.nickname }}"))
    refused = subprocess.run(
        [COMMAND, command], env=process.env, cwd=tmp_path, capture_output=True, text=True
    )
    assert refused.returncode == 2, refused.stderr
    assert "release_failure_initial/body.txt" in refused.stderr
    assert "Traceback" not in refused.stderr
