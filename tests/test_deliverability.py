"""Mail lands in the inbox: every kind of message, as the service builds it in the documented
production setup (From the manufacturer's domain, a reply domain, https links, DKIM), scores
below 4 in a real rspamd and a real SpamAssassin, to a center and to the manufacturer's own
staff alike.

Each template is rendered with the facts ``check-config`` and ``preview`` use, given a genuine
acknowledgement link, and made into the message on the wire by the dispatcher's own steps
(envelope, MIME, DKIM signature). Nothing here touches the database.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from oos_notify.agreements.config import load_agreements
from oos_notify.agreements.vocabulary import Disposition
from oos_notify.delivery import messaging
from oos_notify.delivery.mail import OutgoingMessage, build_message
from oos_notify.delivery.rendering import AckLinkView, Renderer
from oos_notify.ids import new_id
from oos_notify.incidents.acknowledgement import CALLBACK_TEMPLATE, AckTokens
from oos_notify.incidents.decisions import DECISION_RECORDED_TEMPLATE
from oos_notify.incidents.planning import DECISION_OVERDUE_TEMPLATE, DECISION_TEMPLATE
from oos_notify.ops.config_check import sample_context
from oos_notify.ops.preview import LATE_RESULT_TEMPLATES
from oos_notify.return_addresses import ReturnAddresses
from oos_notify.settings import Settings
from oos_notify.store.lifecycle import NotificationKind, NotificationStatus
from oos_notify.store.models import Incident, Notification
from oos_notify.web.services import dkim_signer
from tests import databases, spam_filters
from tests.conftest import CONFIG_DIR, TEMPLATES_DIR

pytestmark = [
    pytest.mark.skipif(not spam_filters.available(), reason="rspamd and spamassassin: .ci/run"),
    # The messages are built without a database: one run (SQLite's) says all there is to say.
    databases.sqlite_only("does not touch the database"),
]

CENTER = "mercy-general-main"
SECRET = "deliverability-test-secret"
TO_CENTER = ("ct-coord@mercy.example", "J. Okafor")
TO_STAFF = ("qa@manufacturer.example", "A. Rivera")
QA_KINDS = {
    "acknowledgement_receipt": NotificationKind.RECEIPT,
    "decision_receipt": NotificationKind.RECEIPT,
    "delivery_failure": NotificationKind.DELIVERY_FAILURE,
    "forwarded_reply": NotificationKind.FORWARDED_REPLY,
}
"""The templates written to the manufacturer's QA only; every other goes to centers and staff."""
THRESHOLD = 4.0
SUBJECT_LIMIT = 78


def production(tmp_path: Path) -> Settings:
    """The setup docs/deliverability.md describes, with a DKIM key of the test's own."""
    key = tmp_path / "dkim.key"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        stdout=key.open("wb"),
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return Settings(
        _env_file=None,
        config_dir=CONFIG_DIR,
        templates_dir=TEMPLATES_DIR,
        smtp_host=spam_filters.RELAY_NAME,
        mail_from="oos-notify@manufacturer.example",
        reply_domain="notify.manufacturer.example",
        public_base_url="https://oos-notify.manufacturer.example",
        secret_key=SECRET,
        dkim_key_file=key,
        dkim_selector="oos2026",
    )


@dataclass(frozen=True)
class Sent:
    kind: str
    """The template, and who it went to: ``center`` or ``staff``."""
    message: OutgoingMessage

    @property
    def parsed(self) -> EmailMessage:
        parsed = message_from_bytes(self.message.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def templates() -> list[str]:
    return sorted(p.parent.name for p in TEMPLATES_DIR.glob("*/subject.txt"))


def every_message(settings: Settings) -> Iterator[Sent]:
    """Each template to a center's coordinator and to the manufacturer's QA (QA's own reports
    to QA only), the first of each recipient's thread and the later ones as the dispatcher
    builds them."""
    agreement = load_agreements(CONFIG_DIR).effective(CENTER)
    renderer = Renderer(TEMPLATES_DIR)
    tokens = AckTokens(SECRET)
    assert settings.reply_domain is not None
    addresses = ReturnAddresses(SECRET, settings.reply_domain)
    signer = dkim_signer(settings)
    now = datetime.now(UTC)
    incident = Incident(id=new_id("inc"), incident_ref="OOS-2026-0142", center_id=CENTER)
    roots: dict[str, str] = {}
    for template in templates():
        asks = template in (DECISION_TEMPLATE, DECISION_OVERDUE_TEMPLATE)
        offered = asks or template in (CALLBACK_TEMPLATE, DECISION_RECORDED_TEMPLATE)
        context = sample_context(
            agreement,
            disposition=Disposition.OOS_RELEASE_OFFERED
            if offered
            else Disposition.UNDER_INVESTIGATION,
            asks_decision=asks,
            late_result=template in LATE_RESULT_TEMPLATES,
        )
        kind = QA_KINDS.get(template, NotificationKind.ESCALATION)
        for who, (email, name) in (("center", TO_CENTER), ("staff", TO_STAFF)):
            if who == "center" and kind.reports_to_qa:
                continue
            notification_id = new_id("ntf")
            notification = Notification(
                id=notification_id,
                incident_id=incident.id,
                kind=kind,
                level=1,
                condition="always",
                role="coordinator",
                contact_id="contact",
                recipient_name=name,
                recipient_email=email,
                template=template,
                with_ack_link=True,
                due_at=now,
                status=NotificationStatus.SENDING,
                message_id=f"<{notification_id.lower()}@{settings.mail_domain}>",
            )
            expires = now + timedelta(days=3)
            link = f"{settings.public_base_url}/ack/{tokens.issue(notification, expires)}"
            rendered = renderer.render(
                template,
                context.model_copy(update={"ack": AckLinkView(url=link, expires_at="in 3 days")}),
            )
            envelope = messaging.envelope(
                notification,
                incident,
                settings,
                now,
                agreement.manufacturer_name,
                addresses,
                roots.get(email),
            )
            roots.setdefault(email, notification.message_id)
            yield Sent(f"{template} to {who}", build_message(rendered, envelope, signer))


@pytest.fixture(scope="module")
def rspamd() -> Iterator[spam_filters.PrivateRspamd]:
    server = spam_filters.PrivateRspamd()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.mark.skipif(
    spam_filters.UNDER_FAKETIME, reason="rspamd hangs under libfaketime (tests/spam_filters.py)"
)
def test_every_message_scores_below_4_in_rspamd_and_spamassassin(
    rspamd: spam_filters.PrivateRspamd, tmp_path: Path
) -> None:
    # Given every kind of message, to a center and to the manufacturer's own staff
    sent = list(every_message(production(tmp_path)))
    assert {s.kind.partition(" to ")[0] for s in sent} == set(templates())

    # When rspamd and SpamAssassin score them as they arrive from the manufacturer's relay
    scored = [
        (s.kind, rspamd.check(s.message.data, s.message.sender, s.message.recipient)) for s in sent
    ]
    assassin = spam_filters.spamassassin([s.message.data for s in sent])

    # Then none comes near a junk folder
    too_high = [f"rspamd {kind}: {v}" for kind, v in scored if v.score >= THRESHOLD]
    too_high += [
        f"SpamAssassin {s.kind}: {v}"
        for s, v in zip(sent, assassin, strict=True)
        if v.score >= THRESHOLD
    ]
    assert not too_high, "\n".join(too_high)


def test_links_and_addresses_never_start_with_punctuation(tmp_path: Path) -> None:
    # Given every kind of message
    for sent in every_message(production(tmp_path)):
        parsed = sent.parsed
        text = "\n".join(
            part.get_content() for part in parsed.walk() if part.get_content_maintype() == "text"
        )
        # Then each link's path and each address's part after the '+' starts with a letter or
        # digit (a path starting with '.' reads as hidden: rspamd's URI_HIDDEN_PATH)
        for path in re.findall(r"https://[^/\s\"'<>]+/[a-z]+/([^\s\"'<>]+)", text):
            assert path[0].isalnum(), (sent.kind, path)
        for header in ("From", "Reply-To", "Message-ID"):
            for token in re.findall(r"[+<]([^@\s]+)@", str(parsed.get(header, ""))):
                assert token[0].isalnum(), (sent.kind, header, token)


def test_text_goes_quoted_printable_and_threads_only_to_messages_sent(tmp_path: Path) -> None:
    settings = production(tmp_path)
    seen: dict[str, list[str]] = {}
    for sent in every_message(settings):
        parsed = sent.parsed
        # Text parts are readable on the wire, not base64
        for part in parsed.walk():
            if part.get_content_maintype() == "text":
                assert part["Content-Transfer-Encoding"] == "quoted-printable", sent.kind
        # The first message to a recipient points at nothing; later ones at that first one
        recipient = sent.message.recipient
        earlier = seen.setdefault(recipient, [])
        if not earlier:
            assert parsed["In-Reply-To"] is None and parsed["References"] is None, sent.kind
        else:
            assert parsed["In-Reply-To"] == parsed["References"] == earlier[0], sent.kind
        earlier.append(str(parsed["Message-ID"]))
        # From, Message-ID and the Reply-To share the reply domain
        assert str(parsed["From"]).endswith("<oos-notify@notify.manufacturer.example>")
        assert str(parsed["Message-ID"]).endswith("@notify.manufacturer.example>")


def test_subjects_are_short_and_name_no_patient_person_or_address(tmp_path: Path) -> None:
    """Depends on the templates' rewritten subjects (SPEC §6)."""
    agreement = load_agreements(CONFIG_DIR).effective(CENTER)
    people = [c for c in (*agreement.contacts, *agreement.system_contacts)]
    wrong = []
    for sent in every_message(production(tmp_path)):
        subject = str(sent.parsed["Subject"])
        if len(subject) > SUBJECT_LIMIT:
            wrong.append(f"{sent.kind}: {len(subject)} characters: {subject}")
        if "COI-" in subject or "@" in subject or any(p.name in subject for p in people):
            wrong.append(f"{sent.kind}: a chain of identity, an address or a name: {subject}")
    assert not wrong, "\n".join(wrong)
