"""Per-notification return addresses: ``oos+<token>@<reply domain>`` as Reply-To and
``bounce+<token>@<reply domain>`` as the envelope sender (VERP), so that whatever comes back
(a reply, an automatic reply, a bounce) names its notification without guessing, and cannot be
forged for a notification nobody saw.

A token is 43 lower-case characters: a key version, the notification's ULID, and 80 bits of an
HMAC over both and the address's purpose. Lower case and Crockford's base32 because relays and
mailbox providers may fold the case of a local part; 43 characters so that ``bounce+<token>``
stays within the 64 octets RFC 5321 allows a local part. A reply token does not verify as a
bounce token, and the other way round. Tokens do not expire: a delayed bounce can come five
days later.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum

from oos_notify.ids import CROCKFORD

_CROCKFORD = CROCKFORD.lower()
_DECODE = {c: i for i, c in enumerate(_CROCKFORD)} | {"o": 0, "i": 1, "l": 1}
_ULID_CHARS = 26
_MAC_BYTES = 10
TOKEN_CHARS = 1 + _ULID_CHARS + _MAC_BYTES * 8 // 5
KEY_VERSION = "a"
"""The first character of every token: which key signed it, so that a later key can be added
beside this one while mail about older notifications still comes back."""
SEPARATORS = "+-=_"
"""The characters a mail system may use between a local part and its extension."""


class Purpose(StrEnum):
    """Which address a token was made for; the value is the local part before the separator."""

    REPLY = "oos"
    BOUNCE = "bounce"


@dataclass(frozen=True)
class ReturnAddress:
    notification_id: str
    purpose: Purpose


def _base32(data: bytes) -> str:
    bits = int.from_bytes(data, "big")
    count = len(data) * 8 // 5
    return "".join(_CROCKFORD[(bits >> (5 * (count - 1 - i))) & 31] for i in range(count))


class ReturnAddresses:
    """Makes and reads the return addresses of one service (its key, domain and separator)."""

    def __init__(self, secret_key: str, domain: str, separator: str = "+") -> None:
        if separator not in SEPARATORS or len(separator) != 1:
            raise ValueError(f"the separator must be one of {SEPARATORS!r}")
        # A key of its own, derived from the service's: a return address never reveals
        # anything that helps forge an acknowledgement link, and the other way round.
        derived = hmac.new(secret_key.encode(), b"oos-notify.return-address", hashlib.sha256)
        self._keys = {KEY_VERSION: derived.digest()}
        self.domain = domain.lower()
        self.separator = separator
        self._pattern = re.compile(
            rf"(?<![\w.+=-])({'|'.join(p.value for p in Purpose)}){re.escape(separator)}"
            rf"([0-9a-z]{{{TOKEN_CHARS}}})@",
            re.IGNORECASE,
        )

    def address(self, notification_id: str, purpose: Purpose) -> str:
        prefix, _, ulid = notification_id.partition("_")
        if prefix != "ntf" or len(ulid) != _ULID_CHARS:
            raise ValueError(f"not a notification id: {notification_id!r}")
        ulid = ulid.lower()
        token = KEY_VERSION + ulid + self._mac(KEY_VERSION, purpose, ulid)
        return f"{purpose.value}{self.separator}{token}@{self.domain}"

    def read(self, token: str, purpose: Purpose) -> str | None:
        """The notification id a token names, or None for a token that is forged, cut short,
        made for the other purpose or signed with a key this service does not have."""
        token = token.lower()
        if len(token) != TOKEN_CHARS or any(c not in _DECODE for c in token):
            return None
        version, ulid, mac = token[0], token[1 : 1 + _ULID_CHARS], token[1 + _ULID_CHARS :]
        if version not in self._keys:
            return None
        ulid = "".join(_CROCKFORD[_DECODE[c]] for c in ulid)
        if not hmac.compare_digest(mac, self._mac(version, purpose, ulid)):
            return None
        return "ntf_" + ulid.upper()

    def find(self, text: str) -> ReturnAddress | None:
        """The first genuine return address in ``text`` (an envelope recipient, a header)."""
        for match in self._pattern.finditer(text):
            purpose = Purpose(match.group(1).lower())
            notification_id = self.read(match.group(2), purpose)
            if notification_id is not None:
                return ReturnAddress(notification_id, purpose)
        return None

    def _mac(self, version: str, purpose: Purpose, ulid: str) -> str:
        message = f"oos-notify.return-address.v1|{purpose.value}|{version}|{ulid}".encode()
        digest = hmac.new(self._keys[version], message, hashlib.sha256).digest()
        return _base32(digest[:_MAC_BYTES])
