"""Free text the service stores, on either database.

PostgreSQL's text cannot hold U+0000 (NUL), and SQLite's can. So that an event or an answer
accepted on one database is accepted on the other, text people submit is refused with a NUL in
it, naming the field; text that arrives from elsewhere and must be kept whatever it holds
(returned mail) keeps each NUL as U+FFFD, the replacement character.
"""

from __future__ import annotations

NUL = "\x00"
REPLACEMENT = "\ufffd"


def storable(value: str) -> str:
    """A validator for submitted text: refused if it holds a NUL."""
    if NUL in value:
        raise ValueError("must not contain U+0000 (NUL), which cannot be stored")
    return value


def nul_replaced(value: str) -> str:
    """Received text as it can be stored: each NUL replaced by U+FFFD."""
    return value.replace(NUL, REPLACEMENT)
