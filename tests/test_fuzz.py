"""Fuzzing: the HTTP API from its own OpenAPI document, and the acknowledgement links.

Whatever a client sends, the answer is never a 5xx, and no made-up or altered link acknowledges.
The default run is CI-sized; set ``OOS_NOTIFY_FUZZ_EXAMPLES`` for a longer one (see README), and
add ``-s`` to see the figures.
"""

from __future__ import annotations

import os
import string
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from itsdangerous import BadData
from itsdangerous.encoding import base64_decode
from schemathesis import GenerationMode
from sqlmodel import Session, select

from oos_notify.agreements.vocabulary import (
    OPENING_EVENT_TYPES,
    Disposition,
    EventType,
    KeyDate,
    Severity,
)
from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.incidents.acknowledgement import AckTokens
from oos_notify.store import apikeys
from oos_notify.store.db import transaction
from oos_notify.store.models import Acknowledgement, Incident, Notification
from oos_notify.web.app import create_app
from oos_notify.web.services import Services
from tests.conftest import START, ack_link, release_failure, service_settings

EXAMPLES = int(os.environ.get("OOS_NOTIFY_FUZZ_EXAMPLES", "10"))
"""Examples per API operation and generation mode; the other fuzzers scale with it."""
THOROUGH = EXAMPLES >= 100
"""A long run also flips every bit of every character of a link and cuts it at every length."""


@dataclass
class Tally:
    """Cases sent and 5xx answers seen, per operation: the figures a fuzz run reports."""

    cases: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"{name}: {count} cases" for name, count in sorted(self.cases.items())]
        lines.append(f"total: {sum(self.cases.values())} cases, {len(self.server_errors)} 5xx")
        return "\n".join(lines + self.server_errors)


TALLY = Tally()


@dataclass
class Fuzzed:
    """The service in a thread of its own, so that synchronous fuzzers can call it."""

    base_url: str
    api_key: str
    services: Services
    smtp: CaptureServer

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    directory = tmp_path_factory.mktemp("fuzz")
    with CaptureServer() as smtp:
        # The fuzzer is one API key on one address sending as fast as it can, and the clock
        # stands still: allowances as large as the run keep the limits (tested on their own)
        # out of its way
        settings_ = service_settings(
            directory,
            smtp,
            events_burst=1_000_000,
            auth_failures_per_minute=1_000_000,
            ack_requests_per_minute=1_000_000,
        )
        app = create_app(settings_, ManualClock(START))
        services: Services = app.state.services
        with transaction(services.engine) as session:
            key = apikeys.create(session, "fuzzer", START)
        server = uvicorn.Server(
            uvicorn.Config(app, host=settings_.host, port=settings_.port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
            time.sleep(0.02)
        try:
            yield Fuzzed(settings_.public_base_url, key, services, smtp)
        finally:
            server.should_exit = True
            thread.join(timeout=60)
    print(f"\nfuzz figures ({EXAMPLES} examples per operation and mode):\n{TALLY.report()}")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_from_the_openapi_document_gets_a_5xx(
    fuzzed: Fuzzed, mode: GenerationMode
) -> None:
    # Given every operation the service publishes, with valid and with invalid input
    schema = schemathesis.openapi.from_url(f"{fuzzed.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} >= {
        "POST /v1/events",
        "GET /v1/incidents",
        "GET /v1/incidents/{incident_id}",
        "GET /v1/incidents/{incident_id}/timeline",
    }
    for operation in operations:

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            # When each generated request is sent with a real API key
            response = case.call(headers=fuzzed.auth, timeout=30)
            TALLY.cases[f"{mode.value} {case.method} {case.path}"] += 1
            if response.status_code >= 500:
                TALLY.server_errors.append(f"{response.status_code} {case.as_curl_command()}")

        try:
            call()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # an operation that takes no input at all
            TALLY.cases[f"{mode.value} {operation.method.upper()} {operation.path}"] += 0

    # Then none was answered with a server error
    assert TALLY.server_errors == []


# --- events shaped to pass validation, to reach planning, rendering and the lifecycle -----------

TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=200)
REFERENCE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,30}", fullmatch=True)


CENTERS = ["mercy-general-main", "mercy-west", "rhein-uk-bonn"]


def shaped(event: dict[str, Any]) -> dict[str, Any]:
    """Without absent fields, and with the center each incident belongs to."""
    number = int(event["incident_ref"].rpartition("-")[2])
    event["center_id"] = CENTERS[number % len(CENTERS)]
    return {k: v for k, v in event.items() if v is not None}


FAILED_ATTRIBUTE = st.fixed_dictionaries(
    {"attribute": TEXT, "specification": TEXT, "result": TEXT}, optional={"method": TEXT}
)
ABOUT_ANY_EVENT = {
    "event_id": REFERENCE,
    "incident_ref": st.integers(0, 29).map(lambda n: f"OOS-FUZZ-{n}"),
    "occurred_at": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    "severity": st.sampled_from([None, *(s.value for s in Severity)]),
    "disposition": st.sampled_from([None, *(d.value for d in Disposition)]),
    "key_dates": st.dictionaries(
        st.sampled_from([k.value for k in KeyDate]),
        st.dates(date(2000, 1, 1), date(2100, 12, 31)).map(str),
    ),
    "summary": st.none() | st.text(st.characters(codec="utf-8"), max_size=4000),
    "qa_contact": st.none()
    | st.fixed_dictionaries({"name": TEXT, "email": st.emails().filter(lambda e: len(e) <= 254)}),
}
OPENINGS = st.fixed_dictionaries(
    {
        **ABOUT_ANY_EVENT,
        "type": st.sampled_from([t.value for t in OPENING_EVENT_TYPES]),
        "product_code": st.just("CARTX"),
        "lot_number": REFERENCE,
        "chain_of_identity": st.from_regex(r"[A-Za-z0-9-]{3,64}", fullmatch=True),
        "failed_attributes": st.lists(FAILED_ATTRIBUTE, min_size=1, max_size=3),
    }
)
FOLLOW_UPS = st.fixed_dictionaries(
    {
        **ABOUT_ANY_EVENT,
        "type": st.sampled_from([t.value for t in EventType if t not in OPENING_EVENT_TYPES]),
        "failed_attributes": st.lists(FAILED_ATTRIBUTE, max_size=2),
    }
)
EVENTS = st.one_of(OPENINGS, FOLLOW_UPS).map(shaped)


# Libraries the service calls in its thread use `random` while Hypothesis generates; it warns.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_events_that_pass_validation_never_get_a_5xx(fuzzed: Fuzzed) -> None:
    # Given any sequence of opening and follow-up events on a few incidents of real centers
    with httpx.Client(base_url=fuzzed.base_url, headers=fuzzed.auth, timeout=30) as client:

        @given(event=EVENTS)
        @settings(
            max_examples=EXAMPLES * 6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def post(event: dict[str, Any]) -> None:
            # When each is posted
            response = client.post("/v1/events", json=event)
            TALLY.cases[f"events-shaped POST /v1/events -> {response.status_code}"] += 1
            if response.status_code >= 500:
                TALLY.server_errors.append(f"{response.status_code} {event!r}")

        post()

    # Then none was answered with a server error, and some got through to open incidents
    assert TALLY.server_errors == []
    assert any(k.endswith("-> 202") for k in TALLY.cases), TALLY.cases


def test_the_fuzzer_reached_every_operation_with_a_key(fuzzed: Fuzzed) -> None:
    """The run above is only worth its figures if it got past authentication."""
    answer = httpx.post(
        f"{fuzzed.base_url}/v1/events", json=release_failure(), headers=fuzzed.auth, timeout=30
    )
    assert answer.status_code in (200, 202), answer.text


# --- acknowledgement links ----------------------------------------------------------------------

URLSAFE = string.ascii_letters + string.digits + "-_"
"""The alphabet of a token's two base64 parts (joined by a dot)."""


def flip(token: str, index: int, bit: int) -> str:
    """The token with one bit of one base64 character flipped (a dot becomes a letter)."""
    char = token[index]
    if char not in URLSAFE:
        return token[:index] + "A" + token[index + 1 :]
    return token[:index] + URLSAFE[URLSAFE.index(char) ^ (1 << bit)] + token[index + 1 :]


def same_token(candidate: str, original: str) -> bool:
    """Whether a mutation still says exactly what the original says.

    The last base64 character of a signature carries bits that decoding ignores, so flipping
    one of them yields a different string for the same claims and signature: not a forgery.
    """
    claims, _, signature = candidate.rpartition(".")
    original_claims, _, original_signature = original.rpartition(".")
    try:
        return claims == original_claims and base64_decode(signature) == base64_decode(
            original_signature
        )
    except BadData:
        return False


@dataclass
class Links:
    coordinator: str
    cell_lab: str
    incident_id: str


def open_incident_for_links(fuzzed: Fuzzed) -> Links:
    event = release_failure(event_id="QA-ACK-FUZZ-1", incident_ref="OOS-ACK-FUZZ")
    answer = httpx.post(f"{fuzzed.base_url}/v1/events", json=event, headers=fuzzed.auth)
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 60
    while True:
        mine = [m for m in fuzzed.smtp.handler.messages() if "OOS-ACK-FUZZ" in m.subject]
        if len(mine) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    by_recipient = {m.recipients[0]: ack_link(m).rpartition("/ack/")[2] for m in mine}
    return Links(
        by_recipient["ct-coord@mercy.example"],
        by_recipient["celllab@mercy.example"],
        answer.json()["incident_id"],
    )


def forgeries(fuzzed: Fuzzed, links: Links) -> list[tuple[str, str]]:
    """(kind, token) for every altered, moved, expired or forged link the test tries."""
    token = links.coordinator
    claims, _, signature = token.rpartition(".")
    other_claims, _, other_signature = links.cell_lab.rpartition(".")
    tried: list[tuple[str, str]] = []
    for index in range(len(token)):
        for bit in range(6) if THOROUGH else [index % 6]:
            tried.append(("bit-flip", flip(token, index, bit)))
        if THOROUGH or index % 5 == 0 or index > len(token) - 5:
            tried.append(("truncated", token[:index]))
    tried += [
        ("extended", token + "A"),
        ("extended", token + "."),
        ("parts-swapped", f"{signature}.{claims}"),
        ("signature-of-another-link", f"{claims}.{other_signature}"),
        ("signature-of-another-link", f"{other_claims}.{signature}"),
        ("no-signature", claims),
        ("empty-signature", f"{claims}."),
    ]
    with Session(fuzzed.services.engine) as session:
        notification = session.exec(
            select(Notification).where(
                Notification.incident_id == links.incident_id,
                Notification.recipient_email == "ct-coord@mercy.example",
            )
        ).one()
        other_incident = session.exec(
            select(Incident.id).where(Incident.id != links.incident_id)
        ).first()
    tokens = fuzzed.services.tokens
    valid_until = START + timedelta(days=14)
    for kind, moved in [
        ("another-recipient", {"contact_id": "mgm-lab"}),
        ("another-incident", {"incident_id": other_incident or "inc_other"}),
        ("unknown-notification", {"id": "ntf_01JD0000000000000000000000"}),
    ]:
        claims_moved = Notification.model_validate({**notification.model_dump(), **moved})
        tried.append((kind, tokens.issue(claims_moved, valid_until)))
    tried.append(("expired", tokens.issue(notification, START - timedelta(seconds=1))))
    tried.append(("another-key", AckTokens("a-guessed-key").issue(notification, valid_until)))
    return tried


def test_no_altered_or_forged_link_acknowledges_or_gets_a_5xx(fuzzed: Fuzzed) -> None:
    # Given an open incident whose coordinator and cell lab received their links
    links = open_incident_for_links(fuzzed)
    refused: Counter[int] = Counter()
    accepted: list[str] = []

    # Redirects are followed: a made-up token ending in '/' is redirected to the one without
    with httpx.Client(base_url=fuzzed.base_url, timeout=30, follow_redirects=True) as client:

        def attempt(kind: str, token: str) -> None:
            if same_token(token, links.coordinator):
                return  # the same link written differently: it may well open the page
            path = f"/ack/{quote(token, safe='')}"
            for method in ("GET", "POST"):
                data = {"response": "received"} if method == "POST" else None
                response = client.request(method, path, data=data)
                TALLY.cases[f"ack {method} {kind}"] += 1
                refused[response.status_code] += 1
                if response.status_code >= 500:
                    TALLY.server_errors.append(f"{response.status_code} {method} /ack/{token}")
                if response.status_code < 400:
                    accepted.append(f"{kind} {method} {token}")

        # When each altered, moved, expired or forged link is opened and confirmed
        for kind, token in forgeries(fuzzed, links):
            attempt(kind, token)

        # And so are made-up ones: link-shaped, and any text at all
        @given(
            token=st.text(URLSAFE + ".", max_size=600) | st.text(max_size=600),
        )
        @settings(
            max_examples=EXAMPLES * 4,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def made_up(token: str) -> None:
            attempt("made-up", token)

        made_up()

        # Then none was accepted, none got a 5xx, and the incident is not acknowledged
        assert accepted == []
        assert TALLY.server_errors == []
        assert set(refused) <= {400, 404, 405, 410, 422}, refused
        with Session(fuzzed.services.engine) as session:
            incident = session.get(Incident, links.incident_id)
            assert incident is not None and incident.status == "notifying"
            assert session.exec(select(Acknowledgement)).first() is None

        # While the genuine link still works
        genuine = f"/ack/{links.coordinator}"
        assert "please confirm" in client.get(genuine).text
        confirmed = client.post(genuine, data={"response": "received"})
        assert confirmed.status_code == 200 and "Thank you" in confirmed.text
