"""How reading returned mail is going in this process, for readiness and metrics."""

from __future__ import annotations

import time


class IntakeHealth:
    """Failures in a row and the time of the last success of a reader or a listener."""

    def __init__(self, working: str) -> None:
        self.working = working
        """What the reader says while all is well, e.g. ``reading imap://...``."""
        self.failing = 0
        self.failed_total = 0
        self.last_error: str | None = None
        self._last_success = time.monotonic()

    def succeeded(self) -> None:
        self.failing = 0
        self.last_error = None
        self._last_success = time.monotonic()

    def failed(self, exc: BaseException) -> None:
        self.failing += 1
        self.failed_total += 1
        self.last_error = type(exc).__name__

    @property
    def last_success_age_seconds(self) -> float:
        return time.monotonic() - self._last_success

    def describe(self) -> str:
        """One line for /readyz: only the error's type, as the page is public."""
        if self.failing:
            return f"retrying: {self.failing} failed in a row ({self.last_error})"
        return "ok"
