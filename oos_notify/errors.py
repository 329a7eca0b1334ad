"""The errors the service raises on purpose, each with the HTTP status it maps to."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A request the service understood and refuses; the message tells the caller what to do."""

    status_code = 400

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def detail(self) -> Any:
        return self.message


class InvalidFields(ServiceError):
    """Fields that are well-formed but wrong here (an unknown center, a missing lot number)."""

    status_code = 422

    def __init__(self, errors: list[tuple[str, str, str]], location: str = "body") -> None:
        self.errors = errors
        self.location = location
        super().__init__("; ".join(f"{field}: {msg}" for field, msg, _ in errors))

    def detail(self) -> Any:
        return [
            {"type": kind, "loc": [self.location, *field.split(".")], "msg": msg}
            for field, msg, kind in self.errors
        ]


class Conflict(ServiceError):
    status_code = 409


class NotFound(ServiceError):
    status_code = 404


class Forbidden(ServiceError):
    """Understood, and not this caller's to do: the message says who may."""

    status_code = 403
