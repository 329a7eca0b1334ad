"""What binds a signature to the content it signs (``oos_notify.store.signatures``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from oos_notify.store import signatures

AT = datetime(2026, 3, 2, 15, 4, 5, tzinfo=UTC)
CONTENT = {"incident": "inc-1", "lot": "LOT-7", "choice": "decline", "meaning": "decision"}


def signed(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "signer": "physician-1",
        "method": "password",
        "printed_name": "Dr. A. Decider",
        "at": AT,
        "zone": "America/Chicago",
        "meaning": "decision",
    }
    return signatures.signed(CONTENT, **(arguments | overrides))


def test_a_signature_names_its_signer_method_time_in_its_zone_and_the_contents_hash() -> None:
    detail = signed()

    signature = detail[signatures.SIGNATURE]
    assert detail[signatures.SIGNED_CONTENT] == CONTENT
    assert signature["printed_name"] == "Dr. A. Decider"
    assert signature["method"] == "password"
    assert signature["signed_at"] == "2026-03-02T09:04:05-06:00"
    assert signature["zone"] == "America/Chicago"
    assert signature["content_sha256"] == signatures.content_hash(CONTENT)
    assert signatures.binding_problem(detail) is None


def test_the_hash_does_not_depend_on_key_order() -> None:
    assert signatures.content_hash({"a": 1, "b": 2}) == signatures.content_hash({"b": 2, "a": 1})
    assert signatures.content_hash({"a": 1}) != signatures.content_hash({"a": 2})


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="zone"):
        signed(at=datetime(2026, 3, 2, 15, 4, 5))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            lambda d: {**d, "signed_content": {**CONTENT, "choice": "accept"}},
            "does not match the content it signs",
        ),
        (
            lambda d: {**d, "signature": {**d["signature"], "content_sha256": "0" * 64}},
            "does not match the content it signs",
        ),
        (lambda d: {**d, "signature": {**d["signature"], "printed_name": ""}}, "no printed name"),
        (lambda d: {k: v for k, v in d.items() if k != "signed_content"}, "cannot be read"),
    ],
    ids=["content-changed", "hash-changed", "no-name", "content-missing"],
)
def test_a_broken_binding_is_named(change: Any, says: str) -> None:
    problem = signatures.binding_problem(change(signed()))

    assert problem is not None and says in problem


def test_an_entry_without_a_signature_has_nothing_to_check() -> None:
    assert signatures.binding_problem({"comment": "received"}) is None


def test_a_name_typed_on_a_decision_page_binds_nothing_and_is_not_checked() -> None:
    typed = {
        "printed_name": "Dr. A. Decider",
        "meaning": "decision",
        "signed_at": "2026-03-02T09:04:05-06:00",
        "timezone": "America/Chicago",
    }

    assert signatures.binding_problem({"signature": typed, "response": "accept"}) is None
    # A signature that claims a method or a hash must carry what it signs
    assert signatures.binding_problem({"signature": {**typed, "method": "passkey"}}) == (
        "its signature or the content it signs cannot be read"
    )


def test_a_methods_evidence_check_runs_on_its_signatures(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Mapping[str, Any]] = []

    def refuse(signature: Mapping[str, Any], content: Mapping[str, Any]) -> str | None:
        seen.append(content)
        return "its passkey assertion does not verify"

    monkeypatch.setitem(signatures.EVIDENCE_CHECKS, "passkey", refuse)

    assert signatures.binding_problem(signed(method="password")) is None
    assert signatures.binding_problem(signed(method="passkey")) == (
        "its passkey assertion does not verify"
    )
    assert seen == [CONTENT]
