"""Deciders' passkeys (WebAuthn): enrolling one, the challenge that binds an assertion to the
content it signs, and checking that assertion, at the signing and again in ``audit verify``.

The challenge a decider's authenticator signs is not random: it is the SHA-256 of the signed
content's hash and a nonce the server drew for that signing. The assertion therefore signs the
content itself (21 CFR 11.70): kept as evidence beside the content, with the enrolled public key,
it can be verified again at any time, and an assertion made for other content never verifies.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlmodel import Session, col, select
from webauthn import (
    base64url_to_bytes,
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from oos_notify.store import audit, signatures
from oos_notify.store.models import PasskeyCredential

METHOD = "passkey"
TIMEOUT_MS = 120_000
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CREDENTIAL_ID = re.compile(r"[A-Za-z0-9_-]{1,1366}")
"""A credential id in base64url: at most 1023 bytes (WebAuthn), nothing a database refuses."""


class PasskeyRefused(Exception):
    """A passkey ceremony that does not check out; the message says what to do."""


@dataclass(frozen=True)
class RelyingParty:
    """Who the passkeys are for: the host centers open the service's links on."""

    id: str
    origin: str
    name: str

    @classmethod
    def of(cls, public_base_url: str, name: str) -> RelyingParty:
        """The RP ID is the public base URL's host and the origin its scheme, host and port: the
        browser checks both against the page the passkey is used on."""
        url = urlsplit(public_base_url)
        scheme, host = url.scheme.lower(), (url.hostname or "").lower()
        port = url.port
        origin = (
            f"{scheme}://{host}"
            if port in (None, _DEFAULT_PORTS.get(scheme))
            else (f"{scheme}://{host}:{port}")
        )
        return cls(host, origin, name)

    @property
    def usable(self) -> bool:
        """Browsers take a domain as RP ID, never an IP address (``http://127.0.0.1`` fails)."""
        try:
            ipaddress.ip_address(self.id.strip("[]"))
        except ValueError:
            return bool(self.id)
        return False


def person_of(email: str) -> str:
    """Whom a passkey identifies: the decider's address, compared without case."""
    return email.strip().lower()


def enrolled(session: Session, email: str) -> list[PasskeyCredential]:
    """The passkeys a person enrolled and may sign with, oldest first."""
    return list(
        session.exec(
            select(PasskeyCredential)
            .where(
                PasskeyCredential.person == person_of(email),
                col(PasskeyCredential.removed_at).is_(None),
            )
            .order_by(col(PasskeyCredential.enrolled_at), col(PasskeyCredential.id))
        ).all()
    )


def every(session: Session) -> list[PasskeyCredential]:
    """Every passkey ever enrolled, removed ones too, by person then enrolment."""
    return list(
        session.exec(
            select(PasskeyCredential).order_by(
                col(PasskeyCredential.person),
                col(PasskeyCredential.enrolled_at),
                col(PasskeyCredential.id),
            )
        ).all()
    )


def remove(session: Session, email: str, now: datetime) -> list[PasskeyCredential]:
    """Stop a person's passkeys signing (a lost or replaced device); they may enrol again from
    their next decision request. Audited; the rows stay."""
    removed = enrolled(session, email)
    for credential in removed:
        credential.removed_at = now
        session.add(credential)
        audit.record(
            session,
            now,
            "passkey_removed",
            "operator",
            credential_id=credential.id,
            person=credential.person,
            printed_name=credential.printed_name,
        )
    return removed


def new_challenge() -> bytes:
    return secrets.token_bytes(32)


def registration_options(
    rp: RelyingParty, email: str, display_name: str, challenge: bytes
) -> dict[str, Any]:
    """What the browser needs to create the person's passkey (as JSON, base64url strings)."""
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=hashlib.sha256(person_of(email).encode()).digest()[:16],
        user_name=person_of(email),
        user_display_name=display_name,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


@dataclass(frozen=True)
class NewCredential:
    id: str
    public_key: str
    sign_count: int


def verify_registration(
    rp: RelyingParty, credential: Mapping[str, Any] | str, challenge: bytes
) -> NewCredential:
    """The credential the browser created for ``challenge``, with the person verified."""
    try:
        verified = verify_registration_response(
            credential=credential if isinstance(credential, str) else dict(credential),
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError) as error:
        raise PasskeyRefused(f"The passkey could not be set up: {error}") from None
    return NewCredential(
        bytes_to_base64url(verified.credential_id),
        bytes_to_base64url(verified.credential_public_key),
        verified.sign_count,
    )


def challenge_for(content: Mapping[str, Any], nonce: str) -> bytes:
    """What the authenticator signs: the SHA-256 of the content's hash and the signing's nonce."""
    return hashlib.sha256(f"{signatures.content_hash(content)}.{nonce}".encode()).digest()


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def assertion_options(
    rp: RelyingParty, challenge: bytes, credentials: Sequence[PasskeyCredential]
) -> dict[str, Any]:
    """What the browser needs to sign ``challenge`` with one of the person's passkeys."""
    options = generate_authentication_options(
        rp_id=rp.id,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        allow_credentials=[
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(c.id)) for c in credentials
        ],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


def credential_id_of(assertion: Mapping[str, Any]) -> str:
    """The credential an assertion names; PasskeyRefused when it names none."""
    found = assertion.get("id")
    if not isinstance(found, str) or not _CREDENTIAL_ID.fullmatch(found):
        raise PasskeyRefused("The passkey's answer names no credential.")
    return found


def verify_assertion(
    rp: RelyingParty,
    assertion: Mapping[str, Any],
    content: Mapping[str, Any],
    nonce: str,
    credential: PasskeyCredential,
) -> tuple[dict[str, str], int]:
    """Check that the enrolled ``credential`` signed ``content`` (through the challenge drawn with
    ``nonce``) with the person verified. Returns the evidence to keep and the new sign count."""
    response = assertion.get("response")
    if not isinstance(response, Mapping):
        raise PasskeyRefused("The passkey's answer is not complete.")
    evidence = {
        "credential_id": credential.id,
        "authenticator_data": response.get("authenticatorData"),
        "client_data_json": response.get("clientDataJSON"),
        "signature": response.get("signature"),
        "public_key": credential.public_key,
        "nonce": nonce,
        "rp_id": rp.id,
        "origin": rp.origin,
    }
    if not all(isinstance(v, str) and v for v in evidence.values()):
        raise PasskeyRefused("The passkey's answer is not complete.")
    problem, sign_count = _verified(evidence, content, credential.sign_count)
    if problem is not None:
        raise PasskeyRefused(problem)
    return {k: str(v) for k, v in evidence.items()}, sign_count


def _verified(
    evidence: Mapping[str, Any], content: Mapping[str, Any], sign_count: int
) -> tuple[str | None, int]:
    try:
        credential_id = str(evidence["credential_id"])
        verified = verify_authentication_response(
            credential={
                "id": credential_id,
                "rawId": credential_id,
                "type": "public-key",
                "response": {
                    "authenticatorData": evidence["authenticator_data"],
                    "clientDataJSON": evidence["client_data_json"],
                    "signature": evidence["signature"],
                },
            },
            expected_challenge=challenge_for(content, str(evidence["nonce"])),
            expected_rp_id=str(evidence["rp_id"]),
            expected_origin=str(evidence["origin"]),
            credential_public_key=base64url_to_bytes(str(evidence["public_key"])),
            credential_current_sign_count=sign_count,
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError) as error:
        return f"the passkey's assertion does not verify for what it signs: {error}", sign_count
    return None, verified.new_sign_count


def check_evidence(signature: Mapping[str, Any], content: Mapping[str, Any]) -> str | None:
    """``audit verify``'s check of a passkey signature: the assertion kept as evidence verifies
    against the public key kept with it and the challenge recomputed from the signed content."""
    evidence = signature.get("evidence")
    if not isinstance(evidence, Mapping):
        return "its passkey signature keeps no evidence"
    problem, _ = _verified(evidence, content, 0)
    return problem


def record_use(session: Session, credential: PasskeyCredential, sign_count: int) -> None:
    """Keep the authenticator's counter, so that a cloned passkey's older count shows."""
    credential.sign_count = sign_count
    session.add(credential)


def enrol(
    session: Session,
    email: str,
    printed_name: str,
    created: NewCredential,
    notification_id: str,
    now: datetime,
) -> PasskeyCredential:
    credential = PasskeyCredential(
        id=created.id,
        person=person_of(email),
        printed_name=printed_name,
        public_key=created.public_key,
        sign_count=created.sign_count,
        enrolled_at=now,
        enrolled_from=notification_id,
    )
    session.add(credential)
    return credential


signatures.EVIDENCE_CHECKS[METHOD] = check_evidence
