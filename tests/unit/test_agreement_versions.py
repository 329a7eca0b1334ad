"""A version of the agreements is their validated content: the same agreements, however the
files are written, are one version; a version read back plans exactly as the files did."""

from __future__ import annotations

import shutil
from pathlib import Path

from oos_notify.agreements import versions
from oos_notify.agreements.config import load_agreements

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
SYSTEM = Path("health_systems") / "mercy-health.yaml"


def copy(tmp_path: Path) -> Path:
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    return config


def digest(config: Path) -> str:
    return versions.content_hash(versions.content(load_agreements(config)))


def test_a_comment_or_reformatting_is_no_new_version(tmp_path: Path) -> None:
    config = copy(tmp_path)
    before = digest(config)
    path = config / SYSTEM
    path.write_text("# reviewed by QA\n\n" + path.read_text() + "\n\n")

    assert digest(config) == before


def test_a_changed_address_is_a_new_version_and_the_diff_shows_it(tmp_path: Path) -> None:
    config = copy(tmp_path)
    old = versions.content(load_agreements(config))
    path = config / SYSTEM
    path.write_text(path.read_text().replace("ct-coord@mercy.example", "ct-new@mercy.example"))
    new = versions.content(load_agreements(config))

    assert versions.content_hash(new) != versions.content_hash(old)
    changed = versions.diff(old, new, "in force", "proposed")
    assert changed.startswith("--- in force\n+++ proposed\n")
    removed = [line for line in changed.splitlines() if line.startswith("-  ")]
    added = [line for line in changed.splitlines() if line.startswith("+  ")]
    assert removed == ["-      email: ct-coord@mercy.example"]
    assert added == ["+      email: ct-new@mercy.example"]


def test_a_version_read_back_gives_every_site_the_same_agreement() -> None:
    agreements = load_agreements(CONFIG_DIR)
    value = versions.content(agreements)

    restored = versions.restore(value, version_id=7)

    assert restored.version_id == 7
    assert versions.content_hash(versions.content(restored)) == versions.content_hash(value)
    assert restored.center_ids() == agreements.center_ids()
    for center in agreements.center_ids():
        assert restored.effective(center) == agreements.effective(center)
