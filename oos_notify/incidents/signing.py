"""A decider's signature: a passkey enrolled once from the link of their decision request, and
each decision signed with it.

Enrolment and signing are two-step ceremonies (the browser asks its authenticator between the
steps). What the server must remember between the steps (the enrolment's challenge; the content
to be signed and its nonce) travels in a token signed with the service's key and bound to the
link, so that nothing is stored for a ceremony that is never finished and nothing the browser
sends back can change what is signed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlmodel import Session
from webauthn import base64url_to_bytes
from webauthn.helpers import bytes_to_base64url

from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.agreements.vocabulary import AckResponse
from oos_notify.incidents.acknowledgement import (
    AckForm,
    AckState,
    AckTokens,
    LinkError,
    Purpose,
    SignedDecision,
    decision_meaning,
    view,
)
from oos_notify.store import audit, passkeys, signatures
from oos_notify.store.models import PasskeyCredential
from oos_notify.store.passkeys import PasskeyRefused, RelyingParty

CEREMONY_VALID_FOR = timedelta(minutes=10)
MAX_CREDENTIAL_JSON = 16 * 1024


class NotSigned(LinkError):
    """A decision posted without a passkey assertion that signs it."""

    status_code = 422
    title = "Your decision is not signed"


class NoPasskey(LinkError):
    """The decider has no passkey yet: the decision cannot be signed."""

    status_code = 409
    title = "Set up your passkey first"


class EnrolmentRefused(LinkError):
    status_code = 409
    title = "The passkey cannot be set up from this link"


class Ceremonies:
    """Seals what a passkey ceremony's second step must find again, for one link, briefly."""

    def __init__(self, secret_key: str, rp: RelyingParty) -> None:
        self.rp = rp
        self._serializer = URLSafeSerializer(secret_key, salt="oos-notify.passkey.v1")

    def seal(self, kind: str, link: str, payload: dict[str, Any], now: datetime) -> str:
        expires = int((now + CEREMONY_VALID_FOR).timestamp())
        token = self._serializer.dumps({"k": kind, "l": link, "x": expires, "p": payload})
        assert isinstance(token, str)
        return token

    def open(self, kind: str, link: str, sealed: str, now: datetime) -> dict[str, Any]:
        """The payload sealed for ``link``; raises NotSigned when it is not genuine, for
        another link or another step, or too old."""
        try:
            data = self._serializer.loads(sealed)
            fits = data["k"] == kind and data["l"] == link and data["x"] > now.timestamp()
            payload = data["p"]
        except (BadSignature, KeyError, TypeError, ValueError):
            fits, payload = False, None
        if not fits or not isinstance(payload, dict):
            raise NotSigned(
                "This signing has expired or does not belong to this page. Open the link from "
                "the email again and sign once more."
            )
        return payload


# --- enrolment ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enrolment:
    """What the enrolment page shows: whom the passkey is for, and whether they have one."""

    state: AckState
    printed_name: str
    email: str
    credentials: list[PasskeyCredential]


def enrolment(session: Session, tokens: AckTokens, token: str, now: datetime) -> Enrolment:
    """The person a decision request's link is made out to; EnrolmentRefused for any other link:
    only a decider enrols, and only from a link made out to them."""
    state = view(session, tokens, token, now)
    if state.purpose is not Purpose.DECISION:
        raise EnrolmentRefused(
            "This link asks for a confirmation, not a decision: a passkey is set up only from "
            "the link of a decision request, by the person it is made out to."
        )
    notification = state.notification
    return Enrolment(
        state,
        notification.recipient_name,
        notification.recipient_email,
        passkeys.enrolled(session, notification.recipient_email),
    )


def start_enrolment(
    session: Session, tokens: AckTokens, ceremonies: Ceremonies, token: str, now: datetime
) -> dict[str, Any]:
    """The options the browser creates the passkey with, and the sealed challenge."""
    found = enrolment(session, tokens, token, now)
    if found.credentials:
        raise EnrolmentRefused(already_enrolled(found.email))
    challenge = passkeys.new_challenge()
    return {
        "options": passkeys.registration_options(
            ceremonies.rp, found.email, found.printed_name, challenge
        ),
        "state": ceremonies.seal("enrol", token, {"challenge": bytes_to_base64url(challenge)}, now),
    }


def already_enrolled(email: str) -> str:
    return (
        f"A passkey is already set up for {email}. Sign your decisions with it; if it is lost, "
        "ask the manufacturer's QA to remove it, then set up a new one."
    )


def finish_enrolment(
    session: Session,
    tokens: AckTokens,
    ceremonies: Ceremonies,
    token: str,
    state: str,
    credential: Any,
    now: datetime,
) -> PasskeyCredential:
    """Keep the passkey the browser created, for the person the link is made out to, printed
    with the name the email addressed them by."""
    found = enrolment(session, tokens, token, now)
    if found.credentials:
        raise EnrolmentRefused(already_enrolled(found.email))
    payload = ceremonies.open("enrol", token, state, now)
    if not isinstance(credential, dict):
        raise NotSigned("The passkey's answer is missing.")
    try:
        created = passkeys.verify_registration(
            ceremonies.rp, credential, base64url_to_bytes(str(payload["challenge"]))
        )
    except PasskeyRefused as refused:
        raise NotSigned(str(refused)) from None
    if session.get(PasskeyCredential, created.id) is not None:
        raise EnrolmentRefused("This passkey is already set up for somebody else.")
    notification = found.state.notification
    enrolled = passkeys.enrol(
        session, found.email, found.printed_name, created, notification.id, now
    )
    audit.record(
        session,
        now,
        "passkey_enrolled",
        notification.recipient_email,
        incident_id=notification.incident_id,
        notification_id=notification.id,
        credential_id=enrolled.id,
        printed_name=enrolled.printed_name,
    )
    session.flush()
    return enrolled


# --- signing -----------------------------------------------------------------------------------


def decision_content(
    state: AckState, response: AckResponse, meaning: str, now: datetime
) -> dict[str, Any]:
    """What a decider signs: the incident, the lot, the choice and its meaning, who, and when it
    was put before them. No patient data: the chain of identity stays out."""
    incident = state.incident
    return {
        "incident": incident.incident_ref,
        "incident_id": incident.id,
        "lot": incident.lot_number,
        "product": incident.product_code,
        "round": incident.ack_round,
        "choice": response.value,
        "meaning": meaning,
        "decider": passkeys.person_of(state.notification.recipient_email),
        "presented_at": now.isoformat(),
    }


def start_signing(
    session: Session,
    tokens: AckTokens,
    ceremonies: Ceremonies,
    token: str,
    response: str,
    now: datetime,
) -> dict[str, Any]:
    """The content of the decision the decider chose, sealed with a new nonce, and the options
    their authenticator signs its challenge with."""
    state = view(session, tokens, token, now)
    try:
        choice = AckResponse(response)
    except ValueError:
        choice = None
    if (
        state.purpose is not Purpose.DECISION
        or choice is None
        or not choice.is_decision
        or choice not in state.choices
    ):
        raise NotSigned("Choose one of the decisions listed on the page.")
    if state.closed or state.acknowledgement is not None:
        raise NotSigned("This decision is already recorded, or the incident is closed.")
    credentials = passkeys.enrolled(session, state.notification.recipient_email)
    if not credentials:
        raise NoPasskey(
            "You have no passkey yet. Set it up once with the link in the email (Set up your "
            "passkey), then sign your decision."
        )
    meaning = decision_meaning(choice, state.incident.oos_release)
    content = decision_content(state, choice, meaning, now)
    nonce = passkeys.new_nonce()
    return {
        "options": passkeys.assertion_options(
            ceremonies.rp, passkeys.challenge_for(content, nonce), credentials
        ),
        "signing": ceremonies.seal("sign", token, {"content": content, "nonce": nonce}, now),
    }


@dataclass(frozen=True)
class PasskeySigner:
    """Checks a decision's passkey assertion on the page's POST (``acknowledgement``'s
    ``DecisionSigner``)."""

    ceremonies: Ceremonies
    token: str

    def sign(
        self,
        session: Session,
        state: AckState,
        form: AckForm,
        meaning: str,
        now: datetime,
    ) -> SignedDecision:
        """The decision's signature, when the assertion posted with it signs exactly this
        decision with the decider's enrolled passkey; NotSigned otherwise."""
        if not form.signing or not form.assertion:
            raise NotSigned(
                "A decision is recorded only when you sign it with your passkey: choose your "
                "decision and press Sign with passkey and record decision."
            )
        sealed = self.ceremonies.open("sign", self.token, form.signing, now)
        content, nonce = sealed.get("content"), sealed.get("nonce")
        if not isinstance(content, dict) or not isinstance(nonce, str):
            raise NotSigned("This signing cannot be read. Sign once more.")
        expected = decision_content(
            state, form.response, meaning, datetime.fromisoformat(content["presented_at"])
        )
        if content != expected:
            raise NotSigned(
                "Your passkey signed a different decision from the one posted, or the incident "
                "changed since: nothing was recorded. Choose again and sign once more."
            )
        try:
            assertion = json.loads(form.assertion)
            if not isinstance(assertion, dict):
                raise ValueError("not an object")
            credential = session.get(PasskeyCredential, passkeys.credential_id_of(assertion))
            email = state.notification.recipient_email
            if (
                credential is None
                or credential.removed_at is not None
                or credential.person != passkeys.person_of(email)
            ):
                raise PasskeyRefused(f"The passkey used is not the one set up for {email}.")
            evidence, count = passkeys.verify_assertion(
                self.ceremonies.rp, assertion, content, nonce, credential
            )
        except (ValueError, PasskeyRefused) as error:
            raise NotSigned(f"Your passkey's signature does not check out: {error}") from None
        passkeys.record_use(session, credential, count)
        timezone = EffectiveAgreement.stored(state.incident.agreement).timezone
        detail = signatures.signed(
            content,
            signer=credential.person,
            method="passkey",
            printed_name=credential.printed_name,
            at=now,
            zone=timezone,
            meaning=meaning,
            evidence=evidence,
        )
        return SignedDecision.of(detail)
