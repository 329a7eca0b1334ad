"""Sortable, prefixed identifiers (ULID layout: 48-bit millisecond time, 80 random bits)."""

from __future__ import annotations

import secrets
import time

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford's base32 alphabet: no I, L, O or U, so an identifier read aloud or retyped
is not misread."""


def _ulid() -> str:
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A new identifier such as ``inc_01JD3X...``; identifiers of one kind sort by creation time."""
    return f"{prefix}_{_ulid()}"
