"""The example agreement with the Main Campus coordinator's address marked as a shared mailbox,
as a center whose coordinators read one inbox would have it."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import CONFIG_DIR

COORDINATOR_LINE = 'email: ct-coord@mercy.example, phone: "+1 312 555 0142", roles: [coordinator]}'


def shared_coordinator_config(directory: Path) -> Path:
    """A copy of the example config in ``directory`` with ``ct-coord@`` marked shared."""
    config = directory / "config"
    shutil.copytree(CONFIG_DIR, config)
    path = config / "health_systems" / "mercy-health.yaml"
    text = path.read_text()
    assert COORDINATOR_LINE in text
    path.write_text(
        text.replace(COORDINATOR_LINE, COORDINATOR_LINE.replace("]}", "], shared: true}"))
    )
    return config
