"""What the unit tests of agreement loading share: a private copy of the example config."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A private copy of the example config, to break."""
    target = tmp_path / "config"
    shutil.copytree(REPO_CONFIG, target)
    return target
