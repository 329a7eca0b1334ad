"""What every message says where: a subject a phone shows whole that names no patient and no
person, the action above the facts, numbers that dial, and outside text that cannot reorder the
text around it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from oos_notify.agreements.config import ConfigError, load_agreements
from oos_notify.delivery.messaging import center_ids
from oos_notify.delivery.rendering import SUBJECT_LIMIT, MessageContext, Renderer
from oos_notify.ops.config_check import load_checked, sample_contexts, subject_problems

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "config"
TEMPLATES_DIR = ROOT / "templates"
AGREEMENTS = load_agreements(CONFIG_DIR)
KINDS = sorted(p.name for p in TEMPLATES_DIR.iterdir() if p.is_dir() and p.name != "centers")
RENDERER = Renderer(TEMPLATES_DIR)

ACTIONS = {
    "acknowledgement_receipt": ("Confirmed by the center: ", "Confirmed, call requested: "),
    "call_task": ("Call the center now: ",),
    "call_task_overdue": ("Call not made: ",),
    "callback_request": ("Call the physician: ",),
    "decider_absent": ("Decider away: ",),
    "decision_outcome": ("Decision made: ",),
    "center_report": (
        "Call the center back: ",
        "Check the dates, lymphodepletion started: ",
        "Check the dates, lymphodepletion postponed: ",
        "Check the status, product received: ",
    ),
    "decision_overdue": ("Decision overdue: ",),
    "decision_receipt": ("Act on decision: ",),
    "decision_recorded": ("Check your decision: ",),
    "decision_reminder": ("Decision reminder: ",),
    "delivery_failure": ("Reach the center: ",),
    "disposition_notice": (
        "Under investigation: ",
        "Review the dates: ",
        "Prepare for OOS release: ",
        "Do not lymphodeplete: ",
        "Quarantine the product: ",
        "Tell the physician: ",
        "Released within spec: ",
    ),
    "escalation_final": ("Call the center: ",),
    "escalation_reminder": ("Confirm now: ",),
    "forwarded_reply": ("Answer the center's reply: ",),
    "incident_resolved": ("Investigation closed: ",),
    "incident_update": ("Check the key dates: ",),
    "incident_withdrawn": ("Withdrawn: ",),
    "late_result_initial": (
        "Assess the patient now: ",
        "Do not infuse: ",
        "Quarantine or assess: ",
    ),
    "late_result_notice": ("Tell the physician: ",),
    "oos_release_decision": ("Decision needed: ",),
    "patient_liaison_brief": ("Plan the patient conversation: ",),
    "patient_liaison_urgent": ("Call the center today: ",),
    "physician_reminder": ("Please confirm: ",),
    "regulatory_clock_missed": ("Report overdue: ",),
    "regulatory_clock_reminder": ("Report due ",),
    "release_failure_initial": ("Confirm receipt: ",),
}


def test_every_kind_of_message_has_a_known_action() -> None:
    assert sorted(ACTIONS) == KINDS


@pytest.mark.parametrize("center_id", AGREEMENTS.center_ids())
@pytest.mark.parametrize("kind", KINDS)
def test_a_subject_leads_with_the_action_and_names_no_patient_person_or_address(
    center_id: str, kind: str
) -> None:
    agreement = AGREEMENTS.effective(center_id)
    people = [*agreement.contacts, *agreement.system_contacts]
    for context in sample_contexts(agreement):
        # When the message is rendered for this site with the sample incident
        subject = RENDERER.render(kind, context, center_ids(agreement)).subject

        # Then it fits a phone's lock screen and starts with what to do, then the incident
        assert len(subject) <= SUBJECT_LIMIT, subject
        assert subject.startswith(ACTIONS[kind]), subject
        assert f": {context.incident.ref}, " in subject, subject
        assert f"lot {context.incident.lot_number}" in subject, subject
        # And it shows neither the chain of identity nor anybody's name or address
        assert context.incident.chain_of_identity not in subject
        for person in people:
            assert person.name not in subject and person.email not in subject, subject
        assert subject_problems(subject, context, agreement) == []


def overridden(tmp_path: Path, kind: str, subject: str) -> Path:
    """The shipped templates with Mercy General's own subject for ``kind``."""
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    folder = templates / "centers" / "mercy-general-main" / kind
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text(subject, encoding="utf-8")
    return folder / "subject.txt"


@pytest.mark.parametrize(
    ("subject", "says"),
    [
        (
            "Please confirm that you have received this notice: {{ incident.ref }}, lot "
            "{{ incident.lot_number }}",
            "the subject is 85 characters for the sample incident, over 78",
        ),
        (
            "Confirm receipt: {{ incident.ref }}, {{ incident.chain_of_identity }}",
            "the subject shows the chain-of-identity code",
        ),
        (
            "Confirm receipt: {{ incident.ref }}, {{ recipient.name }}",
            "the subject shows a contact's name, 'Cell Therapy Coordinator'",
        ),
        (
            "Confirm receipt: {{ incident.ref }} ({{ recipient.email }})",
            "the subject shows a contact's address, 'ct-coord@mercy.example'",
        ),
    ],
    ids=["too-long", "chain-of-identity", "name", "address"],
)
def test_check_config_refuses_a_center_subject_that_is_long_or_names_the_patient_or_a_person(
    tmp_path: Path, subject: str, says: str
) -> None:
    # Given a center's own subject for its first notice
    file = overridden(tmp_path, "release_failure_initial", subject)

    # When the configuration is checked
    with pytest.raises(ConfigError) as refused:
        load_checked(CONFIG_DIR, file.parents[3])

    # Then the problem names the center's file and what is wrong, for that site only
    [problem] = refused.value.problems
    assert problem.file == str(file)
    assert problem.message.startswith(says), problem.message
    assert problem.message.endswith("(for mercy-general-main)")


# --- bodies -----------------------------------------------------------------------------------


def context_for(kind: str, center_id: str = "mercy-general-main", **changes: Any) -> MessageContext:
    agreement = AGREEMENTS.effective(center_id)
    samples = sample_contexts(agreement)
    late = kind.startswith("late_result")
    # A late result whose product's state is unknown: both lists, for before and after infusion
    context = next(
        c for c in samples if c.incident.late_result == late and c.incident.product_status is None
    )
    return context.model_copy(update=changes)


def test_the_first_notice_says_what_to_do_and_by_when_before_the_facts() -> None:
    rendered = RENDERER.render("release_failure_initial", context_for("release_failure_initial"))
    for part in (rendered.html, rendered.text):
        ask = part.index("Confirm receipt with the")
        deadline = part.index("Tue 24 Nov 2026, 11:12 CST")
        link = part.index("http://127.0.0.1:8000/ack/SAMPLE-TOKEN")
        facts = part.index("What failed" if part is rendered.html else "WHAT FAILED")
        assert ask < deadline < link < facts
        assert part.index("COI-SAMPLE-0001") > link
        assert "personal to you" not in part
    assert (
        'Opens <span style="white-space:nowrap;">http://127.0.0.1:8000/…</span>, the notification '
        "service of <bdi>Example Therapeutics</bdi>, on a page that shows this notice again and "
        "records your answer only when you press Confirm."
    ) in rendered.html
    assert "Confirm by Tue 24 Nov 2026, 11:12 CST." in " ".join(rendered.html.split())
    assert "CONFIRM BY Tue 24 Nov 2026, 11:12 CST" in rendered.text


def test_the_late_result_notice_asks_to_quarantine_before_anything_else() -> None:
    rendered = RENDERER.render("late_result_initial", context_for("late_result_initial"))
    for part in (rendered.html, rendered.text):
        quarantine = part.index("Quarantine the product: do not thaw it and do not infuse it.")
        assert quarantine < part.casefold().index("if the product has been infused")
        assert quarantine < part.index("COI-SAMPLE-0001")
        assert quarantine < part.index("http://127.0.0.1:8000/ack/SAMPLE-TOKEN")


@pytest.mark.parametrize("replies_confirm", [True, False])
def test_the_notice_says_a_reply_confirms_only_when_replies_are_read(
    replies_confirm: bool,
) -> None:
    context = context_for("release_failure_initial", replies_confirm=replies_confirm)
    rendered = RENDERER.render("release_failure_initial", context)
    sentence = 'Replying to this email with "received" confirms too.'
    assert (sentence in rendered.html, sentence in rendered.text) == (replies_confirm,) * 2


def test_phone_numbers_dial_and_lot_numbers_do_not_break() -> None:
    rendered = RENDERER.render("escalation_final", context_for("escalation_final"))
    assert (
        '<a href="tel:+13125550142" style="white-space:nowrap;"><bdi>+1 312 555 0142</bdi></a>'
        in rendered.html
    )
    assert '<span style="white-space:nowrap;">LOT-SAMPLE-01</span>' in rendered.html
    # And the text part, which people copy from, holds the number and the lot as written
    assert "+1 312 555 0142" in rendered.text and "LOT-SAMPLE-01" in rendered.text
    assert "white-space" not in rendered.text


# --- free text from outside, isolated -------------------------------------------------------

FREE_TEXT = [
    ("recipient", "name"),
    ("qa_contact", "name"),
    ("center", "name"),
    ("manufacturer",),
    ("incident", "summary"),
    ("incident", "failed_attributes", 0, "attribute"),
    ("incident", "failed_attributes", 0, "result"),
    ("incident", "failed_attributes", 0, "method"),
    ("incident", "failed_attributes", 0, "specification"),
    ("incident", "oos_release", "asked", 0, "name"),
    ("incident", "within_spec_basis", "assignable_cause"),
    ("acknowledgement", "by"),
    ("acknowledgement", "comment"),
    ("confirmations", 0, "by"),
    ("decision", "by"),
    ("decision", "comment"),
    ("decision", "signature", "printed_name"),
    ("decision", "revision", "recorded_by"),
    ("decision", "revision", "reason"),
    ("callback", "by"),
    ("callback", "comment"),
    ("failed_delivery", "recipient", "name"),
    ("failed_delivery", "reply"),
    ("forwarded_reply", "sender", "name"),
    ("forwarded_reply", "subject"),
    ("forwarded_reply", "text"),
    ("forwarded_reply", "reason"),
    ("regulatory_clock", "label"),
    ("regulatory_clock", "source"),
]
"""Texts that come from events, answers, replies and mail servers (or from an agreement's
author), as opposed to the service's own words."""


def reversed_name(path: tuple[str | int, ...]) -> str:
    """A right-to-left override, as in "\u202eztirO aneL .rD", marked with the field's path."""
    return "\u202eztirO aneL .rD [" + ".".join(str(p) for p in path) + "]"


def with_text(values: Any, path: tuple[str | int, ...], text: str) -> None:
    *parents, last = path
    for key in parents:
        values = values[key]
        if values is None:
            return
    values[last] = text


@pytest.mark.parametrize("kind", KINDS)
def test_free_text_in_the_html_is_isolated_so_it_cannot_reorder_what_is_around_it(
    kind: str,
) -> None:
    agreement = AGREEMENTS.effective("mercy-general-main")
    shown = set()
    for sample in sample_contexts(agreement):
        values = sample.model_dump()
        for path in FREE_TEXT:
            with_text(values, path, reversed_name(path))
        html = RENDERER.render(kind, MessageContext.model_validate(values)).html
        for path in FREE_TEXT:
            text = reversed_name(path)
            start = html.find(text)
            while start != -1:
                shown.add(path)
                assert html[start - 5 : start] == "<bdi>", (path, html[start - 80 : start])
                assert html[start + len(text) :].startswith("</bdi>"), path
                start = html.find(text, start + 1)
    # Every message shows some of them: the recipient's name in its footer at least
    assert ("recipient", "name") in shown
