"""Free text the service stores, on either database, and shows to people.

PostgreSQL's text cannot hold U+0000 (NUL), and SQLite's can. So that an event or an answer
accepted on one database is accepted on the other, text people submit is refused with a NUL in
it, naming the field; text that arrives from elsewhere and must be kept whatever it holds
(returned mail) keeps each NUL as U+FFFD, the replacement character.

Unicode's explicit direction controls make a reader see text in another order than it is stored:
``"\u202eztirO aneL .rD"`` shows as "Dr. Lena Ortiz", and an unclosed one flips what follows
it. A name or any other text that goes into a header or a signature refuses them (``one_line``
in ``addresses``); free text is kept as written, and shown isolated (``<bdi>`` in pages) or with
each control spelled out (the PDF record).
"""

from __future__ import annotations

NUL = "\x00"
REPLACEMENT = "\ufffd"

DIRECTION_CONTROLS = frozenset(
    "\u061c\u200e\u200f"  # arabic letter mark, left-to-right and right-to-left marks
    "\u202a\u202b\u202c\u202d\u202e"  # embeddings, overrides and their end
    "\u2066\u2067\u2068\u2069"  # isolates and their end
)
"""The format characters that change the direction text is shown in."""


def storable(value: str) -> str:
    """A validator for submitted text: refused if it holds a NUL."""
    if NUL in value:
        raise ValueError("must not contain U+0000 (NUL), which cannot be stored")
    return value


def nul_replaced(value: str) -> str:
    """Received text as it can be stored: each NUL replaced by U+FFFD."""
    return value.replace(NUL, REPLACEMENT)


def direction_control(value: str) -> str | None:
    """The first character of ``value`` that changes the direction of text, if any."""
    return next((c for c in value if c in DIRECTION_CONTROLS), None)


def controls_spelled_out(value: str) -> str:
    """Text for a display that cannot isolate it (the PDF): each direction control written as
    ``[U+202E]``, so it neither reorders anything nor goes unseen."""
    return "".join(f"[U+{ord(c):04X}]" if c in DIRECTION_CONTROLS else c for c in value)
