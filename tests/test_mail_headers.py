"""Every header of every email says only what it should: one To recipient, the one the SMTP
envelope names; no Cc or Bcc; names that decode back to themselves; a subject of one line.

The fields tried are found, not listed: every value of the example event and every text of every
agreement file gets hostile values (line breaks of every kind, control characters, address
syntax). Each is either refused where it comes in, naming its field, or sent over real SMTP,
where the received bytes are parsed with the standard library's ``email`` package.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, get_args, get_origin
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml
from pydantic import BaseModel
from sqlmodel import Session

from oos_notify.agreements.config import ConfigError, format_location, load_agreements
from oos_notify.clock import ManualClock
from oos_notify.delivery import rendering
from oos_notify.delivery.capture import CapturedMessage, CaptureServer
from oos_notify.delivery.mail import Envelope, build_message
from oos_notify.delivery.rendering import MessageContext, Renderer
from oos_notify.incidents.events import EventIn
from oos_notify.ops.config_check import sample_context
from oos_notify.store.models import Incident
from tests.conftest import (
    CONFIG_DIR,
    START,
    TEMPLATES_DIR,
    RunningService,
    ack_link,
    received,
    release_failure,
    service_settings,
    start_service,
)


def one_line(text: str) -> str:
    """What a header line may show of a text: controls and line separators as spaces, white
    space collapsed."""
    return " ".join(re.sub("[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", text).split())


HEADERS = {
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Auto-Submitted",
    "X-Auto-Response-Suppress",
    "X-OOS-Incident",
    "X-OOS-Notification",
    "MIME-Version",
    "Content-Type",
}
"""The headers the service writes, each once; anything else was smuggled in."""
THREAD = {"In-Reply-To", "References"}
"""Absent from the first message a recipient gets of an incident: there is nothing to point at."""


def assert_written_headers(names: list[str]) -> None:
    """Each header once, the ones the service writes and no other; both thread headers or none."""
    written = set(names)
    assert len(names) == len(written), names
    assert HEADERS - THREAD <= written <= HEADERS, names
    assert written >= THREAD or not THREAD & written, names


BREAKS = {
    "crlf": "\r\n",
    "lf": "\n",
    "cr": "\r",
    "nel": "\x85",
    "line-separator": "\u2028",
    "paragraph-separator": "\u2029",
    "nul": "\x00",
    "escape": "\x1b",
    "tab": "\t",
    "vertical-tab": "\x0b",
}
HOSTILE = {
    **{f"{name}-bcc": f"A. Rivera{c}Bcc: attacker@evil.example" for name, c in BREAKS.items()},
    "crlf-crlf-body": "A. Rivera\r\n\r\nA body of the attacker's",
    "address-syntax": "Rivera, A. <attacker@evil.example>, evil@attacker.example",
    "encoded-word": "=?utf-8?q?Bcc=3A_attacker=40evil.example?=",
    "non-ascii": "Jörg Müller-Lüdenscheidt",
}
"""What a careless or hostile sender could put in a text: line breaks that would start a header,
and text that only looks like one or like a list of addresses."""


def parsed(message: CapturedMessage) -> EmailMessage:
    """The message as the SMTP server received it, parsed by the standard library's ``email``
    package (``policy.default``) from the bytes that arrived: serialising it again to parse it
    once more would test the library's generator, which writes a decoded RFC 2047 word back
    as plain text."""
    return message.message


def assert_safe_headers(message: CapturedMessage, names: dict[str, str]) -> None:
    """The headers of a received message name its one envelope recipient and nobody else, with
    the name ``names`` gives for that address, and a subject of one line."""
    email = parsed(message)
    assert_written_headers(email.keys())
    assert "Bcc" not in email and "Cc" not in email
    [recipient] = message.recipients
    [to] = email["To"].addresses
    assert to.addr_spec == recipient
    assert to.display_name == names[recipient]
    [sender] = email["From"].addresses
    assert sender.addr_spec == message.mail_from
    subject = str(email["Subject"]).strip()
    assert subject == one_line(subject) and subject


def leaves(
    value: Any, path: tuple[str | int, ...] = (), *, texts_only: bool = True
) -> Iterator[tuple[str | int, ...]]:
    """The path of every string in a JSON or YAML document (or of every value: a yes-or-no
    field is present in an example without being a text to try)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key), texts_only=texts_only)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index), texts_only=texts_only)
    elif isinstance(value, str) or not texts_only:
        yield path


def replaced(document: Any, path: tuple[str | int, ...], value: Any) -> Any:
    changed = copy.deepcopy(document)
    target = changed
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return changed


def model_fields(model: type[BaseModel], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every field of a model, nested models' fields included, by path."""
    for name, field in model.model_fields.items():
        yield (*path, name)
        candidates = [field.annotation, *get_args(field.annotation)]
        candidates += [a for c in candidates if get_origin(c) is list for a in get_args(c)]
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                yield from model_fields(candidate, (*path, name))


# --- events ------------------------------------------------------------------------------------


def example(**overrides: Any) -> dict[str, Any]:
    """The SPEC's example event with what else a release failure may say: where the product is,
    the patient's indication, and when lymphodepletion ends."""
    event = release_failure(product_status="shipped", indication="dlbcl", **overrides)
    planned = date.fromisoformat(event["key_dates"]["planned_infusion"])
    event["key_dates"]["lymphodepletion_end"] = (planned - timedelta(days=1)).isoformat()
    return event


def follow_ups(number: int) -> dict[str, dict[str, Any]]:
    """Follow-ups to the example's incident, carrying the fields only a follow-up may: a late
    result after infusion, an offer under a pathway with a checklist item on file, and the facts
    of a re-manufacture and of a release within specification."""
    base = {
        "event_id": f"QA-HDR-FU-{number}",
        "incident_ref": f"OOS-HDR-{number}",
        "occurred_at": "2026-11-24T15:10:00Z",
        "center_id": "mercy-general-main",
    }
    return {
        "late_result": {
            **base,
            "type": "late_result",
            "failed_attributes": [
                {"attribute": "sterility", "specification": "no growth", "result": "growth"}
            ],
            "product_status": "infused",
            "infused_at": "2026-11-24T14:00:00Z",
        },
        "oos_release_offered": {
            **base,
            "type": "disposition",
            "disposition": "oos_release_offered",
            "oos_pathway": "us-expanded-access",
            "oos_checklist": [{"item": "risk_assessment", "reference": "RA-2026-0142"}],
        },
        "remanufacture": {
            **base,
            "type": "disposition",
            "disposition": "remanufacture",
            "remanufacture": {
                "new_apheresis_needed": False,
                "expected_release": "2026-12-14",
                "bridging_therapy_needed": True,
            },
        },
        "released_within_spec": {
            **base,
            "type": "disposition",
            "disposition": "released_within_spec",
            "within_spec_basis": {
                "assignable_cause": "Viability stain expired; re-test with a new lot of stain",
                "certificate_of_analysis": "COA-LOT-24-1187-R1",
            },
        },
    }


EXAMPLE = example()
EVENT_FIELDS = sorted(leaves(EXAMPLE), key=str)
FOLLOW_UP_FIELDS = sorted(
    (
        (kind, path)
        for kind, event in follow_ups(0).items()
        for path in leaves(event)
        if path[0] not in EXAMPLE
    ),
    key=str,
)
"""The texts of each follow-up that the example event does not already try."""


OPENING_ONLY = {
    "drill": True,
    "treating_physician": {
        "name": "Dr. Ada Moreno",
        "email": "a.moreno@partner-oncology.example",
        "phone": "+1 312 555 0199",
    },
}
"""Fields only an opening event says, each of which changes who is sent what (a drill marks
every subject, a treating physician is told first): not in the example whose messages the
header tests count. The physician's name and address are the ``Name`` and ``Address`` types
that the contacts' texts try."""


def test_the_example_events_have_every_field_so_every_field_is_tried() -> None:
    examples = [EXAMPLE, example(**OPENING_ONLY), *follow_ups(0).values()]
    EventIn.model_validate(examples[1])
    paths = {path for event in examples for path in leaves(event, texts_only=False)}
    present = {tuple(p for p in path if isinstance(p, str)) for path in paths}
    present |= {path[:n] for path in present for n in range(1, len(path))}
    assert set(model_fields(EventIn)) <= present


def contact_names(config_dir: Path) -> dict[str, str]:
    """Who is who: every address the agreements send to, with its name."""
    agreements = load_agreements(config_dir)
    people = [*agreements.manufacturer.contacts]
    for system in agreements.health_systems.values():
        people += [*system.contacts, *(c for site in system.sites for c in site.contacts)]
    return {person.email: person.name for person in people}


async def acknowledge_and_collect(
    service: RunningService, smtp: CaptureServer, seen: int
) -> list[CapturedMessage]:
    """The initial emails of the incident just opened, then the receipt and brief that the
    coordinator's acknowledgement sends: every kind of recipient, the QA contact included."""
    await service.settle()
    initial = (await received(smtp, seen + 3))[seen:]
    coordinator = next(m for m in initial if m.recipients == ("ct-coord@mercy.example",))
    answer = await service.client.post(ack_link(coordinator), data={"response": "received"})
    assert answer.status_code == 200, answer.text
    await service.settle()
    return (await received(smtp, seen + 5))[seen:]


@pytest.mark.parametrize("field", EVENT_FIELDS, ids=format_location)
async def test_every_event_field_is_refused_or_sent_with_safe_headers(
    service: RunningService, smtp: CaptureServer, field: tuple[str | int, ...]
) -> None:
    names = contact_names(CONFIG_DIR)
    for number, (case, value) in enumerate(HOSTILE.items()):
        # Given the example event of a new incident with a hostile value in this field
        event = replaced(
            example(event_id=f"QA-HDR-{number}", incident_ref=f"OOS-HDR-{number}"),
            field,
            value,
        )
        seen = len(smtp.handler.messages())

        # When QA posts it
        answer = await service.post_event(event)

        # Then it is refused naming the field, or its emails, receipt to QA included, carry
        # headers that say only what they should
        if answer.status_code == 422:
            locations = [e["loc"] for e in answer.json()["detail"]]
            assert ["body", *field] in locations, (case, locations)
            continue
        assert answer.status_code == 202, (case, answer.text)
        messages = await acknowledge_and_collect(service, smtp, seen)
        qa_contact = event["qa_contact"]
        assert len(messages) == 5 and any(m.recipients == (qa_contact["email"],) for m in messages)
        for message in messages:
            assert_safe_headers(message, {**names, qa_contact["email"]: qa_contact["name"]})


@pytest.mark.parametrize(
    ("kind", "field"),
    FOLLOW_UP_FIELDS,
    ids=[f"{kind}:{format_location(field)}" for kind, field in FOLLOW_UP_FIELDS],
)
async def test_every_follow_up_field_is_refused_or_sent_with_safe_headers(
    service: RunningService, smtp: CaptureServer, kind: str, field: tuple[str | int, ...]
) -> None:
    names = contact_names(CONFIG_DIR)
    qa_contact = EXAMPLE["qa_contact"]
    for number, (case, value) in enumerate(HOSTILE.items()):
        # Given an open incident, and a follow-up to it with a hostile value in this field
        opened = example(event_id=f"QA-HDR-{number}", incident_ref=f"OOS-HDR-{number}")
        assert (await service.post_event(opened)).status_code == 202
        await service.settle()
        seen = len(smtp.handler.messages())
        event = replaced(follow_ups(number)[kind], field, value)

        # When QA posts it
        answer = await service.post_event(event)

        # Then it is refused naming the field, or the emails it sends carry headers that say
        # only what they should
        if answer.status_code == 422:
            locations = [e["loc"] for e in answer.json()["detail"]]
            assert ["body", *field] in locations, (case, locations)
            continue
        assert answer.status_code == 202, (case, answer.text)
        await service.settle()
        messages = smtp.handler.messages()[seen:]
        assert messages, case
        for message in messages:
            assert_safe_headers(message, {**names, qa_contact["email"]: qa_contact["name"]})


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(value, id=case)
        for case, value in HOSTILE.items()
        if not any(c in value for c in BREAKS.values())
    ],
)
async def test_a_qa_contact_name_with_address_syntax_is_one_recipient_named_as_written(
    service: RunningService, smtp: CaptureServer, name: str
) -> None:
    # Given a QA contact whose name holds commas, angle brackets, an encoded word or umlauts
    event = release_failure(qa_contact={"name": name, "email": "qa@manufacturer.example"})
    assert (await service.post_event(event)).status_code == 202

    # When the center acknowledges and the receipt goes to the QA contact
    messages = await acknowledge_and_collect(service, smtp, 0)

    # Then the receipt has one To recipient, whose name decodes back to what QA sent
    [receipt] = [m for m in messages if m.recipients == ("qa@manufacturer.example",)]
    [to] = parsed(receipt)["To"].addresses
    assert (to.display_name, to.addr_spec) == (name, "qa@manufacturer.example")
    assert_safe_headers(receipt, {"qa@manufacturer.example": name})


# --- subjects ----------------------------------------------------------------------------------

SAMPLE = sample_context(load_agreements(CONFIG_DIR).effective("mercy-general-main"))
CONTEXT_TEXTS = sorted(leaves(SAMPLE.model_dump()), key=str)


def jinja_path(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


@pytest.mark.parametrize("text", CONTEXT_TEXTS, ids=format_location)
def test_a_subject_is_one_line_whatever_text_its_template_prints(
    tmp_path: Path, text: tuple[str | int, ...]
) -> None:
    # Given a center's subject template that prints this text of the context
    folder = tmp_path / "probe"
    folder.mkdir()
    (folder / "subject.txt").write_text(f"[OOS] {{{{ {jinja_path(text)} }}}}\n")
    (folder / "body.txt").write_text("body\n")
    (folder / "body.html").write_text("<p>body</p>\n")
    renderer = Renderer(tmp_path)
    envelope = Envelope(
        sender="oos-notify@localhost",
        sender_name="Example Therapeutics OOS notifications",
        recipient="ct-coord@mercy.example",
        recipient_name="Cell Therapy Coordinator",
        message_id="<n1@localhost>",
        notification_id="ntf_1",
        thread_id="<inc_1@localhost>",
        incident_ref="OOS-2026-0142",
        sent_at=START,
    )
    for case, value in HOSTILE.items():
        context = MessageContext.model_validate(replaced(SAMPLE.model_dump(), text, value))

        # When a message is rendered with a hostile value there and written out
        message = build_message(renderer.render("probe", context), envelope)
        email = message_from_bytes(message.data, policy=policy.default)

        # Then the subject is that value on one line, and no header was added
        assert str(email["Subject"]).strip() == one_line(f"[OOS] {value}"), case
        assert_written_headers(email.keys())
        assert len(email["To"].addresses) == 1


# --- agreement files ---------------------------------------------------------------------------

CONFIG_TEXTS = [
    (path.relative_to(CONFIG_DIR).as_posix(), leaf)
    for path in sorted(CONFIG_DIR.rglob("*.yaml"))
    for leaf in leaves(yaml.safe_load(path.read_text(encoding="utf-8")))
]


@pytest.mark.parametrize(
    ("file", "field"),
    CONFIG_TEXTS,
    ids=[f"{file}:{format_location(field)}" for file, field in CONFIG_TEXTS],
)
async def test_every_text_of_an_agreement_file_is_refused_or_sent_with_safe_headers(
    tmp_path: Path, smtp: CaptureServer, clock: ManualClock, file: str, field: tuple[str | int, ...]
) -> None:
    # Given the example config with a line break that would add a Bcc in one of its texts
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    path = config / file
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    value = "Mercy\r\nBcc: attacker@evil.example"
    path.write_text(yaml.safe_dump(replaced(document, field, value), allow_unicode=True))

    # When the service loads it
    try:
        load_agreements(config)
    except ConfigError as error:
        # Then it is refused naming the file and the field
        where = format_location(field)
        problems = [p for p in error.problems if p.file == f"config/{file}"]
        assert any(p.field.startswith(where) for p in problems), problems
        return

    # Or, where the text is not one a header shows, every email still carries safe headers
    service = await start_service(service_settings(tmp_path, smtp, config_dir=config), clock)
    try:
        assert (await service.post_event(release_failure())).status_code == 202
        messages = await acknowledge_and_collect(service, smtp, 0)
    finally:
        await service.stop()
    qa = release_failure()["qa_contact"]
    for message in messages:
        assert_safe_headers(message, {**contact_names(config), qa["email"]: qa["name"]})


async def test_names_from_agreement_files_are_one_recipient_named_as_written(
    tmp_path: Path, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given a manufacturer and a coordinator whose names hold address syntax and umlauts
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    manufacturer = config / "manufacturer.yaml"
    manufacturer.write_text(
        manufacturer.read_text().replace(
            "name: Example Therapeutics", 'name: "Exämple, Inc. <qa@evil.example>"'
        )
    )
    system = config / "health_systems/mercy-health.yaml"
    coordinator = '"=?utf-8?q?Bcc=3A_x?= Koordination, Zelltherapie <x@evil.example>"'
    system.write_text(system.read_text().replace("Cell Therapy Coordinator", coordinator))

    # When an incident at that center is notified
    service = await start_service(service_settings(tmp_path, smtp, config_dir=config), clock)
    try:
        assert (await service.post_event(release_failure())).status_code == 202
        await service.settle()
        messages = await received(smtp, 3)
    finally:
        await service.stop()

    # Then each email has one sender and one recipient, named as the files name them
    to_coordinator = next(m for m in messages if m.recipients == ("ct-coord@mercy.example",))
    email = parsed(to_coordinator)
    [sender] = email["From"].addresses
    assert sender.display_name == "Exämple, Inc. <qa@evil.example> OOS notifications"
    [to] = email["To"].addresses
    assert to.display_name == "=?utf-8?q?Bcc=3A_x?= Koordination, Zelltherapie <x@evil.example>"
    for message in messages:
        assert_safe_headers(message, contact_names(config))


# --- internationalised addresses ---------------------------------------------------------------


async def test_an_internationalised_domain_is_stored_and_sent_in_its_ascii_form(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given a QA contact at a domain with an umlaut
    event = release_failure(qa_contact={"name": "Jörg Müller", "email": "qa@Bücher.example"})

    # When QA posts the event and the center acknowledges
    answer = await service.post_event(event)
    assert answer.status_code == 202, answer.text
    messages = await acknowledge_and_collect(service, smtp, 0)

    # Then the receipt goes to the domain's IDNA form, in the SMTP envelope and in the To header
    [receipt] = [m for m in messages if m.recipients == ("qa@xn--bcher-kva.example",)]
    [to] = parsed(receipt)["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Jörg Müller", "qa@xn--bcher-kva.example")
    # And the center's emails name the same address for questions, with a link that works
    for message in messages:
        if message.recipients[0].endswith("@mercy.example"):
            assert "qa@xn--bcher-kva.example" in message.part("plain")
            assert 'href="mailto:qa@xn--bcher-kva.example?subject=' in message.part("html")


async def test_a_non_ascii_mailbox_name_is_refused_saying_what_to_send_instead(
    service: RunningService, smtp: CaptureServer
) -> None:
    event = release_failure(qa_contact={"name": "Jörg", "email": "jörg@bücher.example"})

    answer = await service.post_event(event)

    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "qa_contact", "email"]
    assert "SMTPUTF8" in error["msg"] and "ASCII address" in error["msg"]
    await service.settle()
    assert smtp.handler.messages() == []


def test_an_agreement_file_with_an_internationalised_domain_is_kept_in_ascii_form(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    system = config / "health_systems/rhein-klinikum.yaml"
    system.write_text(
        system.read_text().replace(
            "zelltherapie@ukb.example", "zelltherapie@Universitätsklinikum.example"
        )
    )

    agreement = load_agreements(config).effective("rhein-uk-bonn")

    [coordinator] = [c for c in agreement.contacts if c.id == "ukb-coord"]
    ascii_domain = "universitätsklinikum.example".encode("idna").decode("ascii")
    assert coordinator.email == f"zelltherapie@{ascii_domain}"
    assert ascii_domain.startswith("xn--")


# --- mailto links ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "qa?cc=attacker@manufacturer.example",
        "qa&bcc=attacker@manufacturer.example",
        "qa#frag@manufacturer.example",
        "qa%0D%0ABcc=x@manufacturer.example",
        "o'brien+oos/qa=1@manufacturer.example",
    ],
)
async def test_a_mailto_link_reaches_exactly_the_address_whatever_it_holds(
    service: RunningService, smtp: CaptureServer, address: str
) -> None:
    # Given a QA address that is valid but holds characters with a meaning in a URL
    event = release_failure(qa_contact={"name": "A. Rivera", "email": address})
    assert (await service.post_event(event)).status_code == 202

    # When the center's email arrives
    await service.settle()
    [message, *_] = await received(smtp, 3)

    # Then its "Questions" link addresses that one mailbox, with the incident as its only header
    html = message.part("html")
    start = html.index('href="mailto:') + len('href="')
    link = html[start : html.index('"', start)].replace("&amp;", "&")
    parts = urlsplit(link)
    assert (parts.scheme, unquote(parts.path), parts.fragment) == ("mailto", address, "")
    assert parse_qs(parts.query) == {"subject": ["OOS-2026-0142, lot LOT-24-1187"]}


def test_the_mailto_filter_encodes_the_address_and_the_subject() -> None:
    link = rendering.mailto(
        "qa?cc=x&body=y@manufacturer.example", subject="OOS-1?\r\nBcc: x & more"
    )
    assert link == (
        "mailto:qa%3Fcc%3Dx%26body%3Dy@manufacturer.example"
        "?subject=OOS-1%3F%20Bcc%3A%20x%20%26%20more"
    )


# --- incidents stored before these checks --------------------------------------------------------


async def test_an_incident_stored_with_an_address_now_refused_goes_on(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given an incident whose stored agreement has an address the old pattern let through and
    # email-validator refuses (a special-use domain), as an earlier version stored it
    answer = await service.post_event(release_failure())
    incident_id = answer.json()["incident_id"]
    link = ack_link(next(m for m in await received(smtp, 3) if "ct-coord@" in m.recipients[0]))
    with Session(service.services.engine) as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None
        stored = json.loads(
            json.dumps(incident.agreement).replace("@mercy.example", "@mercy.local")
        )
        incident.agreement = stored
        session.add(incident)
        session.commit()

    # When QA sends an update, the reminder falls due and the coordinator acknowledges
    update = release_failure(event_id="QA-EVT-2026-000200", type="update", summary="More news")
    updated = await service.post_event(update)
    clock.advance(timedelta(hours=2))
    await service.settle()
    page = await service.client.get(link)
    confirmed = await service.client.post(link, data={"response": "received"})
    await service.settle()

    # Then each works as before: the update is accepted, the reminder sent, the receipt too
    assert updated.status_code == 202, updated.text
    assert page.status_code == 200 and confirmed.status_code == 200
    recipients = [m.recipients[0] for m in smtp.handler.messages()]
    assert {"ct-coord2@mercy.example", "ct-md@mercy.example"} <= set(recipients)
    assert recipients[-2:].count("qa@manufacturer.example") == 1


def test_a_forwarded_replys_links_answer_exactly_its_sender() -> None:
    # Given a reply forwarded to QA from an address with characters that mean something in a URL
    address = "qa?cc=attacker@mercy.example"
    forwarded = SAMPLE.forwarded_reply
    assert forwarded is not None
    sender = forwarded.sender.model_copy(update={"email": address})
    context = SAMPLE.model_copy(
        update={"forwarded_reply": forwarded.model_copy(update={"sender": sender})}
    )

    # When QA's message is rendered
    html = Renderer(TEMPLATES_DIR).render("forwarded_reply", context).html

    # Then each link to answer the sender addresses that one mailbox, naming the incident
    links = [link for link in re.findall(r'href="(mailto:[^"]+)"', html) if "attacker" in link]
    assert len(links) == 2
    for link in links:
        parts = urlsplit(link.replace("&amp;", "&"))
        assert (unquote(parts.path), parts.fragment) == (address, "")
        assert parse_qs(parts.query) == {"subject": ["OOS-SAMPLE-0001, lot LOT-SAMPLE-01"]}
