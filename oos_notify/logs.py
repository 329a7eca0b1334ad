"""Structured logs: one JSON object per line, with the ids an operator searches by.

A record's ``extra`` ids (``incident_id``, ``notification_id``, ``event_id``...) become fields of
their own. Secrets never reach a line: acknowledgement links are shown as ``/ack/…`` and API keys
as ``oosk_<prefix>_…``, whatever logger wrote them, and the service never logs a
chain-of-identity code (the patient reference) in the first place.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from oos_notify.settings import LogFormat

CONTEXT_FIELDS = (
    "incident_id",
    "notification_id",
    "event_id",
    "event_type",
    "recipient",
    "template",
    "attempt",
    "smtp_code",
    "retry_at",
    "duration_ms",
    "count",
)
"""The ``extra`` keys a log call may pass; each becomes a field of the JSON line."""

_ACK_TOKEN = re.compile(r"/ack/[^\s?\"'<>]+")
_API_KEY = re.compile(r"\b(oosk_[0-9a-f]{10})_[A-Za-z0-9_-]+")
_RETURN_ADDRESS = re.compile(r"\b(oos|bounce)([+=_-])[0-9A-Za-z]{43}@", re.IGNORECASE)


def redact(text: str) -> str:
    """The text with every acknowledgement token, API key secret and return-address token
    (which would let its holder answer for a notification) cut out."""
    text = _RETURN_ADDRESS.sub(r"\1\2…@", _ACK_TOKEN.sub("/ack/…", text))
    return _API_KEY.sub(r"\1_…", text)


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", <ids>..., "exception"}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, ids appended as ``key=value``, secrets cut out the same way."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(
            f"{name}={record.__dict__[name]}"
            for name in CONTEXT_FIELDS
            if record.__dict__.get(name) is not None
        )
        text = super().format(record)
        return redact(f"{text} {ids}" if ids else text)


def configure(log_format: LogFormat) -> None:
    """Send every logger's records to stderr in the chosen format; quiet the chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format is LogFormat.JSON else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for chatty in ("mail.log", "apscheduler", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
