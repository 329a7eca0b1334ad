"""Editing a copy of the example config and finding the problems its loading reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from oos_notify.agreements.config import ConfigError, ConfigProblem, load_agreements


def edit(config: Path, relative: str, old: str, new: str) -> None:
    path = config / relative
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} should occur once in {relative}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def problems_of(config: Path) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as raised:
        load_agreements(config)
    assert raised.value.problems, "a ConfigError lists its problems"
    assert str(raised.value) == "\n".join(str(p) for p in raised.value.problems)
    return raised.value.problems


def find(problems: list[ConfigProblem], file: str, field: str, *fragments: str) -> ConfigProblem:
    """The one problem reported for ``file`` and ``field`` whose message has every fragment."""
    matching = [
        p
        for p in problems
        if p.file == file and p.field == field and all(f in p.message for f in fragments)
    ]
    assert len(matching) == 1, f"no single {file}: {field}: {fragments} in:\n" + "\n".join(
        str(p) for p in problems
    )
    return matching[0]
