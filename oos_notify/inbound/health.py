"""How reading returned mail is going in this process, for readiness."""

from __future__ import annotations


class IntakeHealth:
    """Failures in a row of a reader or a listener, and the last one's error type."""

    def __init__(self, working: str) -> None:
        self.working = working
        """What the reader says while all is well, e.g. ``reading imap://...``."""
        self.failing = 0
        self.last_error: str | None = None
        self.caveat: str | None = None
        """What works differently while all is well, e.g. that no reply confirms."""

    def succeeded(self) -> None:
        self.failing = 0
        self.last_error = None

    def failed(self, exc: BaseException) -> None:
        self.failing += 1
        self.last_error = type(exc).__name__

    def describe(self) -> str:
        """One line for /readyz: only the error's type, as the page is public."""
        if self.failing:
            return f"retrying: {self.failing} failed in a row ({self.last_error})"
        return f"ok; {self.caveat}" if self.caveat else "ok"
