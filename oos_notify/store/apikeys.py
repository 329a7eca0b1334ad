"""API keys for manufacturer systems: shown once, stored as a hash, revocable by name."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from sqlmodel import Session, col, select

from oos_notify.errors import Conflict, NotFound
from oos_notify.ids import new_id
from oos_notify.store import audit
from oos_notify.store.models import ApiKey

_PREFIX_LENGTH = 10


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
