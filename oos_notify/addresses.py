"""Email addresses and the names that go with them into mail headers, checked where they come in
(events, agreement files, settings): an address is one mailbox and nothing else, a name is one
line. What passes here can be written into a header without starting another one."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field, ValidationInfo

from oos_notify.texts import direction_control

MAX_ADDRESS_LENGTH = 254
"""RFC 5321's limit on a forward path, which ``email-validator`` enforces too."""

LOCALHOST = "localhost"

STORED: dict[str, Any] = {"stored": True}
"""Validation context for values read back from the database: they were checked when they came
in, under the rules of that day, and an incident must go on with them as they were."""

_BREAKING = frozenset({"Cc", "Zl", "Zp"})
"""Unicode categories that end or corrupt a header line: C0 and C1 controls (CR, LF, NUL, TAB,
ESC, NEL U+0085, DEL), and the line and paragraph separators U+2028 and U+2029."""


BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""The same characters as a pattern, to test or clean a whole text at once (the categories are
closed: C0, C1, DEL and the two separators are all they will ever hold)."""


def is_breaking(char: str) -> bool:
    return unicodedata.category(char) in _BREAKING


def mailbox(value: str) -> str:
    """One mailbox as it goes on the wire: ``local@domain``, the domain in lower case and, when
    it is internationalised, in its IDNA form (``qa@bücher.example`` is
    ``qa@xn--bcher-kva.example``), so the SMTP envelope and the headers stay plain ASCII.

    Refused: display names (``A <a@b>``), lists (``a@b, c@d``), anything after the domain
    (``?cc=``), quoted local parts and IP literals, and a non-ASCII part before the ``@``, which
    only a server speaking SMTPUTF8 could take and this service does not send it. The message
    never repeats the value: a secret pasted into the wrong setting stays out of logs.
    """
    try:
        checked = validate_email(
            value,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_empty_local=False,
        )
    except EmailNotValidError as exc:
        raise ValueError(f"not an email address: {exc}") from None
    if checked.ascii_email is None:
        raise ValueError(
            "not an address this service can send to: the part before the @ has non-ASCII "
            "characters, which need SMTPUTF8; give an ASCII address for this mailbox "
            "(a non-ASCII domain is fine)"
        )
    return checked.ascii_email


def sender(value: str) -> str:
    """The From address: a mailbox as ``mailbox`` checks it, or ``<name>@localhost``, the default
    for a machine that sends only to the embedded capture server (``email-validator`` refuses
    ``localhost`` as a special-use name, so only the part before the ``@`` is checked then)."""
    local, at, domain = value.rpartition("@")
    if at and domain.lower() == LOCALHOST:
        checked_local = mailbox(f"{local}@{LOCALHOST}.example").rpartition("@")[0]
        return f"{checked_local}@{LOCALHOST}"
    return mailbox(value)


def one_line(value: str) -> str:
    """A name shown in a header or signing something: refused if it holds a line break, a
    control character, or a character that changes the direction of text (which would let it
    show as another name, or reorder what stands beside it)."""
    found = next((c for c in value if is_breaking(c)), None)
    if found is not None:
        raise ValueError(
            f"must be one line of text without control characters; it contains U+{ord(found):04X}"
        )
    turning = direction_control(value)
    if turning is not None:
        raise ValueError(
            "must not contain characters that change the direction of text; "
            f"it contains U+{ord(turning):04X}"
        )
    return value


def as_one_line(text: str) -> str:
    """Text of any origin made into one header line: each line break or control character
    becomes a space, and runs of white space one space."""
    return " ".join(BREAKING.sub(" ", text).split())


def _address(value: str, info: ValidationInfo) -> str:
    return value if info.context == STORED else mailbox(value)


def _name(value: str, info: ValidationInfo) -> str:
    return value if info.context == STORED else one_line(value)


Address = Annotated[
    str,
    Field(max_length=MAX_ADDRESS_LENGTH, json_schema_extra={"format": "email"}),
    AfterValidator(_address),
]
"""An email address, stored in the form ``mailbox`` gives it."""

Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_name)]
"""A person's, mailbox's or organisation's name: one line, as it may appear in a header."""
