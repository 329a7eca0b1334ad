"""Console roles and the shortest password: all the ``user`` command's options need, apart from
``accounts`` and the ORM it loads, which every ``oos-notify`` command's parser would otherwise
import (``db upgrade`` included)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    """Reads every page."""
    QA = "qa"
    """Also posts follow-ups (key dates, disposition, resolved, withdrawn)."""

    @property
    def can_act(self) -> bool:
        return self is Role.QA


MIN_PASSWORD_LENGTH = 12
