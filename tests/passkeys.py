"""A decider's passkey for tests that speak HTTP: a software authenticator (an EC P-256 key, as a
phone's or a security key's) that creates a credential and signs assertions exactly as WebAuthn
defines them, and the page's two steps done as the page's script does them."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import Any

import cbor2
import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn import base64url_to_bytes
from webauthn.helpers import bytes_to_base64url

UP, UV, AT = 0x01, 0x04, 0x40


class SoftPasskey:
    """One passkey on one device, for the relying party of ``origin``."""

    def __init__(self, origin: str) -> None:
        self.origin = origin.rstrip("/")
        self.rp_id = httpx.URL(self.origin).host
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(16)
        self.counter = 0
        self.user_verified = True

    def _rp_hash(self) -> bytes:
        return hashlib.sha256(self.rp_id.encode()).digest()

    def _flags(self, *extra: int) -> int:
        flags = UP | (UV if self.user_verified else 0)
        for bit in extra:
            flags |= bit
        return flags

    def _cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def cose_public_key(self) -> str:
        """The credential's public key as the service keeps it (COSE, base64url)."""
        return bytes_to_base64url(self._cose_key())

    def _client_data(self, kind: str, challenge: str) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": False}
        ).encode()

    def create(self, options: dict[str, Any]) -> dict[str, Any]:
        """The credential ``navigator.credentials.create`` returns (attestation "none")."""
        assert options["rp"]["id"] == self.rp_id
        client_data = self._client_data("webauthn.create", options["challenge"])
        auth_data = (
            self._rp_hash()
            + bytes([self._flags(AT)])
            + struct.pack(">I", self.counter)
            + bytes(16)
            + struct.pack(">H", len(self.credential_id))
            + self.credential_id
            + self._cose_key()
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        credential_id = bytes_to_base64url(self.credential_id)
        return {
            "id": credential_id,
            "rawId": credential_id,
            "type": "public-key",
            "response": {
                "clientDataJSON": bytes_to_base64url(client_data),
                "attestationObject": bytes_to_base64url(attestation),
            },
            "clientExtensionResults": {},
        }

    def sign(self, options: dict[str, Any]) -> dict[str, Any]:
        """The assertion ``navigator.credentials.get`` returns for ``options``' challenge."""
        allowed = [c["id"] for c in options.get("allowCredentials", [])]
        assert bytes_to_base64url(self.credential_id) in allowed, "not a passkey the server knows"
        self.counter += 1
        client_data = self._client_data("webauthn.get", options["challenge"])
        auth_data = self._rp_hash() + bytes([self._flags()]) + struct.pack(">I", self.counter)
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        credential_id = bytes_to_base64url(self.credential_id)
        return {
            "id": credential_id,
            "rawId": credential_id,
            "type": "public-key",
            "response": {
                "authenticatorData": bytes_to_base64url(auth_data),
                "clientDataJSON": bytes_to_base64url(client_data),
                "signature": bytes_to_base64url(signature),
                "userHandle": None,
            },
            "clientExtensionResults": {},
        }


def challenge_of(options: dict[str, Any]) -> bytes:
    return base64url_to_bytes(options["challenge"])


async def enrol(client: httpx.AsyncClient, link: str, device: SoftPasskey) -> httpx.Response:
    """Set up ``device``'s passkey from a decision request's link, as the enrolment page does."""
    started = await client.post(f"{link}/passkey/options")
    assert started.status_code == 200, started.text
    body = started.json()
    return await client.post(
        f"{link}/passkey",
        json={"state": body["state"], "credential": device.create(body["options"])},
    )


async def signed_fields(
    client: httpx.AsyncClient, link: str, response: str, device: SoftPasskey
) -> dict[str, str]:
    """The form fields of a decision signed with ``device``, as the page's script fills them."""
    started = await client.post(f"{link}/signing", json={"response": response})
    assert started.status_code == 200, started.text
    body = started.json()
    return {
        "response": response,
        "signing": body["signing"],
        "assertion": json.dumps(device.sign(body["options"])),
    }


async def decide(
    client: httpx.AsyncClient, link: str, response: str, device: SoftPasskey, **fields: str
) -> httpx.Response:
    """Sign ``response`` with ``device`` and post it with the page's other ``fields``."""
    signed = await signed_fields(client, link, response, device)
    return await client.post(link, data={**signed, **fields})


async def enrol_and_decide(
    client: httpx.AsyncClient, link: str, response: str, **fields: str
) -> httpx.Response:
    """A decider with no passkey yet sets one up from the link, then signs ``response``."""
    device = SoftPasskey(str(client.base_url))
    enrolled = await enrol(client, link, device)
    assert enrolled.status_code == 201, enrolled.text
    return await decide(client, link, response, device, **fields)
