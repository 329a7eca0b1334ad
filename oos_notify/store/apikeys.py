"""API keys for manufacturer systems: shown once, stored as a hash, revocable by name."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from oos_notify.errors import Conflict, NotFound
from oos_notify.ids import new_id
from oos_notify.store import audit
from oos_notify.store.models import ApiKey

_PREFIX_LENGTH = 10

RECHECK_AFTER = timedelta(seconds=5)
"""How long a process trusts a key it found live before it reads the key again: a key revoked
(by ``oos-notify apikey revoke``, in any process) is refused by every process within this."""


def _hash(key: str) -> str:
    # Keys are 256-bit random, so a plain SHA-256 is as good as a slow hash and costs nothing.
    return hashlib.sha256(key.encode()).hexdigest()


def create(session: Session, name: str, now: datetime) -> str:
    """Create a key and return it in plain text; this is the only time it is ever visible."""
    if session.exec(select(ApiKey).where(ApiKey.name == name)).first() is not None:
        raise Conflict(f"an API key named {name!r} exists already")
    prefix = secrets.token_hex(_PREFIX_LENGTH // 2)
    key = f"oosk_{prefix}_{secrets.token_urlsafe(32)}"
    session.add(
        ApiKey(id=new_id("key"), name=name, prefix=prefix, key_hash=_hash(key), created_at=now)
    )
    audit.record(session, now, "api_key_created", "operator", key_name=name)
    return key


def authenticate(session: Session, presented: str) -> ApiKey | None:
    """The live key matching ``presented``, compared in constant time; None otherwise."""
    parts = presented.split("_")
    if len(parts) < 3 or parts[0] != "oosk" or len(presented) > 200:
        return None
    candidate = session.exec(select(ApiKey).where(ApiKey.prefix == parts[1])).first()
    if candidate is None or candidate.revoked_at is not None:
        return None
    return candidate if hmac.compare_digest(candidate.key_hash, _hash(presented)) else None


class LiveKeys:
    """The keys a process found live in the last ``RECHECK_AFTER``, by the hash of the presented
    key: a client posting event after event costs one read of its key every few seconds, not one
    per request. Unknown and revoked keys are never kept, so they are read each time (the
    per-client limit on failed authentications bounds that)."""

    def __init__(self, max_keys: int = 1_000) -> None:
        self.max_keys = max_keys
        self._found: dict[str, tuple[ApiKey, datetime]] = {}
        self._lock = threading.Lock()

    def get(self, presented: str, now: datetime) -> ApiKey | None:
        """The key ``presented`` was found to be within ``RECHECK_AFTER`` of ``now``, if any."""
        with self._lock:
            found = self._found.get(_hash(presented))
        if found is None:
            return None
        key, at = found
        # A clock set back trusts nothing it found "later"
        return key if at <= now < at + RECHECK_AFTER else None

    def keep(self, presented: str, key: ApiKey, now: datetime) -> None:
        """Remember that ``presented`` was found live as ``key`` at ``now``."""
        with self._lock:
            if len(self._found) >= self.max_keys:
                self._found.clear()
            self._found[_hash(presented)] = (key, now)


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.exec(select(ApiKey).order_by(col(ApiKey.created_at))).all())


def revoke(session: Session, name: str, now: datetime) -> None:
    key = session.exec(select(ApiKey).where(ApiKey.name == name)).first()
    if key is None:
        raise NotFound(f"no API key named {name!r}")
    if key.revoked_at is None:
        key.revoked_at = now
        session.add(key)
        audit.record(session, now, "api_key_revoked", "operator", key_name=name)
