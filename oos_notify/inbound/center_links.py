"""What a returned mail's text must not carry on: a center's confirmation link or return
address. A reply may quote or forward its notice ("Begin forwarded message:"); forwarded to QA
or shown on the timeline, a working link there would let whoever reads it confirm in the
center's name, and a return address would let them answer as the center."""

from __future__ import annotations

import re
from datetime import datetime

from oos_notify.incidents.acknowledgement import AckTokens, LinkError

LINK_REMOVED = "[confirmation link removed]"
ADDRESS_REMOVED = "[reply address removed]"
_ACK_LINK = re.compile(r"[^\s<>\"'()\[\]]*/ack/[^\s<>\"'()\[\]]*", re.IGNORECASE)
_RETURN_ADDRESS = re.compile(r"\b(?:oos|bounce)[+=_-][0-9a-z]{43}@[a-z0-9.-]+", re.IGNORECASE)
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_.-]{40,}")
"""Long enough to be an acknowledgement token standing without its link."""


def without_center_links(text: str, tokens: AckTokens, now: datetime) -> str:
    """``text`` with every confirmation link (any URL with ``/ack/`` in it), every working
    acknowledgement token standing alone and every return address replaced by a note."""

    def link(match: re.Match[str]) -> str:
        found = match.group(0)
        kept = found.rstrip(".,;:!?")  # the sentence's punctuation, not the link's
        return LINK_REMOVED + found[len(kept) :]

    text = _ACK_LINK.sub(link, text)
    text = _RETURN_ADDRESS.sub(ADDRESS_REMOVED, text)

    def token(match: re.Match[str]) -> str:
        word = match.group(0)
        for candidate in {word, word.rstrip("._-")}:
            try:
                tokens.read(candidate, now)
            except LinkError:
                continue
            return LINK_REMOVED
        return word

    return _TOKEN_LIKE.sub(token, text)
