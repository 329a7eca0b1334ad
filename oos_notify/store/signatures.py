"""Electronic signatures and what binds each one to the record it signs (21 CFR 11.50, 11.70).

A signature is kept in the audit entry that records the signed act, beside the content it signs:
``detail["signed_content"]`` (what the signer was shown and agreed to: the incident, the lot, the
choice, the meaning, the time) and ``detail["signature"]`` (who signed, by which method, the
printed name, when and in which zone, the meaning, and the SHA-256 of the signed content in its
canonical JSON form). The hash chain already shows an entry changed after it was written;
``binding_problem`` shows a signature that does not match what it claims to sign, however the
entry came to be, and ``audit verify`` runs it on every signed entry.

A method can add evidence that checks the signature itself, not only its hash: a passkey's
assertion, verified against the public key enrolled. Such a method registers its checker in
``EVIDENCE_CHECKS``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

Method = Literal["passkey", "password", "one_time_code"]
"""How the signer was identified: a WebAuthn passkey; a console account's password re-entered at
the signing; a one-time code sent to the signer's second registered channel, with the emailed link
(the weakest, recorded as such)."""

METHOD_LABELS: dict[str, str] = {
    "passkey": "passkey (WebAuthn) the signer enrolled",
    "password": "console password re-entered at the signing",
    "one_time_code": (
        "one-time code sent to the signer's second channel, with the emailed link "
        "(the weaker method)"
    ),
}
"""How the record names each method."""
TYPED_NAME = "a name typed at the signing (no identification of the signer)"
"""How the record names a signature from before methods: only a printed name was typed."""

SIGNED_CONTENT = "signed_content"
SIGNATURE = "signature"


def content_hash(content: Mapping[str, Any]) -> str:
    """SHA-256 of the signed content in one canonical JSON form (sorted keys, no spaces)."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Signature:
    """One signing: the manifestation 21 CFR 11.50 asks for, and the hash that binds it."""

    signer: str
    """Who signed: the enrolled person's identifier, or the console account's address."""
    method: Method
    printed_name: str
    """The signer's name as enrolled or registered, never typed at the signing."""
    signed_at: str
    """When, in ISO 8601 with the offset of ``zone``."""
    zone: str
    """The IANA zone ``signed_at`` is written in."""
    meaning: str
    """What the signature means, in the words the signer was shown ("approval", "review"…)."""
    content_sha256: str
    evidence: dict[str, Any] = field(default_factory=dict)
    """What the method keeps to check the signature again (a passkey's assertion)."""


def signed(
    content: Mapping[str, Any],
    *,
    signer: str,
    method: Method,
    printed_name: str,
    at: datetime,
    zone: str,
    meaning: str,
    evidence: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The audit detail of a signed act: the content and its signature, bound by its hash.

    ``at`` must be aware; it is written in ``zone``.
    """
    if at.tzinfo is None:
        raise ValueError("a signature's time must carry its zone")
    signature = Signature(
        signer=signer,
        method=method,
        printed_name=printed_name,
        signed_at=at.astimezone(ZoneInfo(zone)).isoformat(),
        zone=zone,
        meaning=meaning,
        content_sha256=content_hash(content),
        evidence=dict(evidence or {}),
    )
    return {SIGNED_CONTENT: dict(content), SIGNATURE: asdict(signature)}


EvidenceCheck = Callable[[Mapping[str, Any], Mapping[str, Any]], str | None]
"""Checks a method's evidence against the signed content: None, or what is wrong."""

EVIDENCE_CHECKS: dict[str, EvidenceCheck] = {}


def binding_problem(detail: Mapping[str, Any]) -> str | None:
    """What is wrong with the signatures in an audit entry's detail, or None.

    An entry with no signature has nothing to check, nor has a name typed on a decision page
    (a manifestation of a signature, bound to nothing). A signature must name its method and
    printed name, and its hash must match the content beside it; a method with evidence must
    have it check out.
    """
    signature = detail.get(SIGNATURE)
    if signature is None or _typed_name(detail, signature):
        return None
    content = detail.get(SIGNED_CONTENT)
    if not isinstance(signature, Mapping) or not isinstance(content, Mapping):
        return "its signature or the content it signs cannot be read"
    for name in ("signer", "method", "printed_name", "signed_at", "meaning", "content_sha256"):
        if not signature.get(name):
            return f"its signature has no {name.replace('_', ' ')}"
    if signature["content_sha256"] != content_hash(content):
        return "its signature does not match the content it signs: one of them was changed"
    check = EVIDENCE_CHECKS.get(str(signature["method"]))
    if check is not None:
        return check(signature, content)
    return None


def _typed_name(detail: Mapping[str, Any], signature: Any) -> bool:
    """A name typed on a decision page: a printed name, meaning and time with no signed content
    and no hash (what decisions recorded before signatures were bound, and what a decider
    without a signing method still records)."""
    return (
        isinstance(signature, Mapping)
        and SIGNED_CONTENT not in detail
        and "content_sha256" not in signature
        and "method" not in signature
    )
