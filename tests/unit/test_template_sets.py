"""An incident's messages come from the template set it opened with, whatever the disk says now."""

from __future__ import annotations

from pathlib import Path

import pytest

from oos_notify.agreements.config import load_agreements
from oos_notify.delivery.rendering import (
    MessageContext,
    Renderer,
    TemplateSet,
    UnknownTemplateVersion,
)
from oos_notify.ops.config_check import sample_context

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def write(folder: Path, name: str, subject: str) -> None:
    (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / name / "subject.txt").write_text(subject)
    (folder / name / "body.txt").write_text("{{ incident.ref }}\n")
    (folder / name / "body.html").write_text("<p>{{ incident.ref }}</p>\n")


@pytest.fixture
def context() -> MessageContext:
    return sample_context(load_agreements(CONFIG_DIR).effective("mercy-general-main"))


def test_a_stored_set_keeps_its_wording_after_the_files_change(
    tmp_path: Path, context: MessageContext
) -> None:
    write(tmp_path, "notice", "First wording {{ incident.ref }}")
    renderer = Renderer(tmp_path)
    stored = renderer.snapshot(())
    renderer.keep_snapshots(lambda version: stored if version == stored.version else None)

    write(tmp_path, "notice", "Second wording {{ incident.ref }}")

    kept = renderer.render("notice", context, (), stored.version)
    assert (kept.subject, kept.version) == ("First wording OOS-SAMPLE-0001", stored.version)
    assert Renderer(tmp_path).render("notice", context).subject == "Second wording OOS-SAMPLE-0001"


def test_a_message_the_set_does_not_have_comes_from_the_files(
    tmp_path: Path, context: MessageContext
) -> None:
    write(tmp_path, "notice", "Notice")
    renderer = Renderer(tmp_path)
    stored = renderer.snapshot(())
    renderer.keep_snapshots(lambda version: stored)

    write(tmp_path, "failure_report", "Report {{ incident.ref }}")

    rendered = renderer.render("failure_report", context, (), stored.version)
    assert rendered.subject == "Report OOS-SAMPLE-0001"
    assert rendered.version != stored.version


def test_an_unknown_set_is_an_error_not_a_silent_fallback(
    tmp_path: Path, context: MessageContext
) -> None:
    write(tmp_path, "notice", "Notice")
    renderer = Renderer(tmp_path)
    renderer.keep_snapshots(lambda version: None)

    with pytest.raises(UnknownTemplateVersion):
        renderer.render("notice", context, (), "0123456789abcdef")


def test_the_same_files_make_the_same_version() -> None:
    files = {"a/subject.txt": "A", "_layout.txt": "L"}
    assert TemplateSet.of(files).version == TemplateSet.of(dict(reversed(files.items()))).version
    assert TemplateSet.of(files).version != TemplateSet.of({**files, "a/subject.txt": "B"}).version
