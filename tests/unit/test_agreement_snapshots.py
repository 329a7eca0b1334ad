"""An incident's agreement read back from its stored snapshot, and agreement versions: each
message and answer reads the agreement its incident was planned with, never another one."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from oos_notify.agreements.config import EffectiveAgreement, load_agreements

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
CENTER = "mercy-general-main"


@pytest.fixture
def mercy() -> EffectiveAgreement:
    return load_agreements(CONFIG_DIR).effective(CENTER)


@pytest.fixture
def snapshot(mercy: EffectiveAgreement) -> dict[str, Any]:
    return mercy.model_dump(mode="json")


def test_a_stored_agreement_reads_back_as_it_was_planned(
    mercy: EffectiveAgreement, snapshot: dict[str, Any]
) -> None:
    assert EffectiveAgreement.stored(snapshot) == mercy
    assert EffectiveAgreement.stored(copy.deepcopy(snapshot)).version() == mercy.version()


def test_a_different_snapshot_of_the_same_site_reads_back_as_itself(
    snapshot: dict[str, Any],
) -> None:
    renamed = {**copy.deepcopy(snapshot), "center_name": "Mercy General, renamed"}

    assert EffectiveAgreement.stored(snapshot).center_name != "Mercy General, renamed"
    assert EffectiveAgreement.stored(renamed).center_name == "Mercy General, renamed"
    assert EffectiveAgreement.stored(snapshot).center_name != "Mercy General, renamed"


def test_a_snapshot_changed_after_it_was_read_reads_back_changed(
    snapshot: dict[str, Any],
) -> None:
    EffectiveAgreement.stored(snapshot)
    snapshot["timezone"] = "Pacific/Auckland"

    assert EffectiveAgreement.stored(snapshot).timezone == "Pacific/Auckland"


def test_a_broken_snapshot_fails_even_after_a_good_one_of_its_site(
    snapshot: dict[str, Any],
) -> None:
    EffectiveAgreement.stored(snapshot)
    broken = {**copy.deepcopy(snapshot), "contacts": "nobody"}

    with pytest.raises(ValidationError):
        EffectiveAgreement.stored(broken)


def test_an_agreement_changed_by_a_copy_has_a_version_of_its_own(
    mercy: EffectiveAgreement,
) -> None:
    before = mercy.version()
    changed = mercy.model_copy(update={"center_name": "Mercy General, renamed"})

    assert changed.version() != before
    assert mercy.version() == before
    assert EffectiveAgreement.stored(changed.model_dump(mode="json")).version() == changed.version()


def test_a_site_has_one_agreement_per_loaded_config() -> None:
    first, second = load_agreements(CONFIG_DIR), load_agreements(CONFIG_DIR)

    assert first.effective(CENTER) is first.effective(CENTER)
    assert first.effective(CENTER) == second.effective(CENTER)
    with pytest.raises(KeyError):
        first.effective("no-such-center")
