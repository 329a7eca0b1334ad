"""The tables. Statuses and their allowed transitions are in ``lifecycle``."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    LargeBinary,
    Text,
    UniqueConstraint,
    false,
)
from sqlmodel import Field, SQLModel

from oos_notify.store.instants import UTCDateTime


def _utc(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True)
    name: str = Field(unique=True, index=True)
    prefix: str = Field(index=True)
    key_hash: str
    created_at: datetime = _utc()
    revoked_at: datetime | None = _utc(default=None)


class ServiceValue(SQLModel, table=True):
    """Small values the service generates once and keeps, such as the default signing key."""

    __tablename__ = "service_values"

    name: str = Field(primary_key=True)
    value: str


class Incident(SQLModel, table=True):
    __tablename__ = "incidents"

    id: str = Field(primary_key=True)
    incident_ref: str = Field(unique=True, index=True)
    center_id: str = Field(index=True)
    product_code: str
    lot_number: str
    chain_of_identity: str
    opening_type: str
    plan_type: str
    """The event type whose plan the escalation runs under: a late result switches to its own."""
    severity: str
    severity_rule: str | None = None
    status: str = Field(index=True)
    disposition: str | None = None
    escalation_level: int = 0
    ack_round: int = 1
    """Raised when a late result restarts the escalation: each round needs its own answer."""
    decision: str | None = None
    """The decision that counts on an out-of-specification product offered for release: the
    decider's, or the revision QA recorded last."""
    decided_at: datetime | None = _utc(default=None)
    product_status: str | None = None
    """Where the product is (``ProductStatus``): what the center is asked depends on it."""
    infused_at: datetime | None = _utc(default=None)
    indication: str | None = None
    """What the patient is treated for (one of the product's ``infusion_windows``): which of
    the label's infusion windows the messages cite."""
    escalation_started_at: datetime | None = _utc(default=None)
    """When the current round's escalation started (the opening, or the late result that
    restarted it): a faster clock re-plans its steps from here. None means ``opened_at``."""
    oos_release: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    """The regulatory pathway of an OOS product offered for release and its checklist:
    ``{"pathway", "name", "items": [{"id", "label", "reference", "confirmed_at"}]}``."""
    remanufacture: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    """``{"new_apheresis_needed", "expected_release", "bridging_therapy_needed"}``."""
    within_spec_basis: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    """Why a lot released within specification after all: ``{"assignable_cause",
    "certificate_of_analysis"}``."""
    failed_attributes: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    key_dates: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    summary: str | None = Field(default=None, sa_column=Column(Text))
    qa_contact: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    agreement_version: str
    agreement: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    agreements_version_id: int | None = Field(default=None, foreign_key="agreement_versions.id")
    """The approved version of the agreements the incident opened under (``agreement_versions``);
    None on incidents opened before agreements came under change control."""
    template_version: str | None = None
    """The template set (``template_sets``) the incident's messages are rendered with."""
    opened_at: datetime = _utc(index=True)
    updated_at: datetime = _utc()
    acknowledged_at: datetime | None = _utc(default=None)
    closed_at: datetime | None = _utc(default=None)
    notify_deadline: datetime | None = _utc(default=None, index=True)
    """The agreement's ``notify_within`` promise for the severity, from the opening."""
    first_delivered_at: datetime | None = _utc(default=None)
    """When the mail server accepted the first notice: the promise is met if not after the
    deadline."""
    treating_physician: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    """The patient's treating physician the opening event named (``{"name", "email",
    "phone"}``): told first and asked to decide, whether or not a contact of the site."""
    physician_confirmed_at: datetime | None = _utc(default=None)
    """When the treating physician confirmed (or decided) in the current round: only this
    stops the physician's own steps."""
    drill: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    """A practice incident: real contacts, DRILL on every message, no patient liaison, and
    never counted in the real reports."""


class Event(SQLModel, table=True):
    __tablename__ = "events"

    event_id: str = Field(primary_key=True)
    incident_id: str = Field(foreign_key="incidents.id", index=True)
    type: str
    occurred_at: datetime = _utc()
    received_at: datetime = _utc()
    body_hash: str
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    response: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class Notification(SQLModel, table=True):
    """One email to one recipient: the outbox row the dispatcher claims, sends and settles."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "status", "due_at"),)

    id: str = Field(primary_key=True)
    incident_id: str = Field(foreign_key="incidents.id", index=True)
    kind: str
    level: int
    condition: str
    role: str
    contact_id: str
    recipient_name: str
    recipient_email: str
    template: str
    with_ack_link: bool
    anchor: str | None = None
    """The key date a step is due before; moving the date moves the step."""
    due_at: datetime = _utc()
    status: str
    attempts: int = 0
    lease_until: datetime | None = _utc(default=None)
    claimed_by: str | None = Field(default=None, index=True)
    """The process sending it (``name/incarnation``): it alone renews, settles or returns it."""
    message_id: str
    last_error: str | None = None
    template_version: str | None = None
    created_at: datetime = _utc()
    sent_at: datetime | None = _utc(default=None)


class DeliveryAttempt(SQLModel, table=True):
    __tablename__ = "delivery_attempts"

    id: int | None = Field(default=None, primary_key=True)
    notification_id: str = Field(foreign_key="notifications.id", index=True)
    at: datetime = _utc()
    outcome: str
    smtp_code: int | None = None
    smtp_reply: str | None = None
    duration_ms: int


class SentMessage(SQLModel, table=True):
    """The message a mail server accepted for a notification, byte for byte as it went on the
    wire (headers, DKIM signature and MIME parts), zlib-compressed: what the center received,
    kept so that QA can read it as sent, not as it would be rendered today."""

    __tablename__ = "sent_messages"

    notification_id: str = Field(foreign_key="notifications.id", primary_key=True)
    sent_at: datetime = _utc()
    size: int
    """Its length before compression, in bytes."""
    compressed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class FailureReport(SQLModel, table=True):
    """Links a message to the manufacturer's QA to the notification it reports undeliverable."""

    __tablename__ = "failure_reports"

    notification_id: str = Field(foreign_key="notifications.id", primary_key=True)
    failed_notification_id: str = Field(foreign_key="notifications.id", index=True)


class RegulatoryClock(SQLModel, table=True):
    """A report owed to an authority by ``due_at``, started by a transition of the incident;
    QA closes it with the report's reference."""

    __tablename__ = "regulatory_clocks"
    __table_args__ = (UniqueConstraint("incident_id", "clock_id"),)

    id: str = Field(primary_key=True)
    incident_id: str = Field(foreign_key="incidents.id", index=True)
    clock_id: str
    """The clock's id in the agreement (``authority_notification``)."""
    label: str
    source: str
    """Where the obligation is written."""
    owner: str
    """The role reminded: ``manufacturer:regulatory_affairs``."""
    started_by: str
    started_at: datetime = _utc()
    due_at: datetime = _utc(index=True)
    report_reference: str | None = None
    closed_at: datetime | None = _utc(default=None)
    closed_by: str | None = None
    """The email of who posted the report's reference."""
    created_at: datetime = _utc()


class RegulatoryClockNotice(SQLModel, table=True):
    """Links a reminder or escalation of a regulatory clock to the clock it is about."""

    __tablename__ = "regulatory_clock_notices"

    notification_id: str = Field(foreign_key="notifications.id", primary_key=True)
    clock_row_id: str = Field(foreign_key="regulatory_clocks.id", index=True)


class Acknowledgement(SQLModel, table=True):
    __tablename__ = "acknowledgements"

    id: str = Field(primary_key=True)
    incident_id: str = Field(foreign_key="incidents.id", index=True)
    notification_id: str = Field(foreign_key="notifications.id")
    contact_id: str
    email: str
    role: str
    purpose: str = "acknowledgement"
    """``acknowledgement`` of the notice, the physician's ``decision`` on an OOS product, or a
    ``callback_request`` that leaves the decision open."""
    round: int = 1
    response: str
    comment: str | None = Field(default=None, sa_column=Column(Text))
    stopped_escalation: bool | None = None
    """Whether this confirmation stopped the round's escalation: only the plan's
    ``stops_escalation`` roles do. None on rows from before that rule, which all stopped it."""
    signature: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    """A decision's signature manifestation (21 CFR 11.50): ``{"printed_name", "meaning",
    "signed_at" (local, with offset), "timezone", "shown"}``."""
    revision: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    """Set on a decision QA recorded: ``{"reason", "recorded_by": {"name", "email"},
    "replaces", "previous_response"}``."""
    callback_phone: str | None = None
    """The number a ``callback_request`` asks to be called on."""
    confirmed_by: str | None = None
    """The person who confirmed through a shared mailbox's link, as they named themselves; None
    where the address is one person's, or the mailbox answered by email."""
    client_address: str | None = None
    user_agent: str | None = None
    at: datetime = _utc()


class CenterReport(SQLModel, table=True):
    """What a center said of its patient's treatment, from its link or in a reply: a date that
    moved, the product received, or a request to be called."""

    __tablename__ = "center_reports"

    id: str = Field(primary_key=True)
    incident_id: str = Field(foreign_key="incidents.id", index=True)
    notification_id: str = Field(foreign_key="notifications.id")
    """The notice whose link or reply it came from: its recipient is the author."""
    contact_id: str
    email: str
    role: str
    kind: str
    """``lymphodepletion_started``, ``lymphodepletion_postponed``, ``product_received`` or
    ``call_me`` (``center_reports.ReportKind``)."""
    day: date | None = None
    """The date a report of a started or postponed lymphodepletion names."""
    phone: str | None = None
    call_window: str | None = None
    """When to call, as the center wrote it: ``14:00-16:00``."""
    comment: str | None = Field(default=None, sa_column=Column(Text))
    source: str
    """``link`` (the page) or ``reply`` (an email reply)."""
    event_id: str | None = None
    """The update event it made, when it changed the incident's facts."""
    at: datetime = _utc()


class CenterReportReceipt(SQLModel, table=True):
    """Links a message to the manufacturer's QA to the center's report it tells of."""

    __tablename__ = "center_report_receipts"

    notification_id: str = Field(foreign_key="notifications.id", primary_key=True)
    report_id: str = Field(foreign_key="center_reports.id", index=True)


class AuditEntry(SQLModel, table=True):
    """One link of a hash chain ``audit`` writes and verifies."""

    __tablename__ = "audit_entries"
    __table_args__ = (Index("ix_audit_entries_chain_seq", "chain", "seq"),)

    seq: int | None = Field(default=None, primary_key=True)
    chain: int | None = None
    """Which of the trail's chains the entry is a link of; None: the single chain entries were
    written to before migration 0004."""
    at: datetime = _utc()
    incident_id: str | None = Field(default=None, index=True)
    notification_id: str | None = None
    action: str
    actor: str
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    prev_hash: str
    entry_hash: str


class StoredTemplateSet(SQLModel, table=True):
    """A center's templates as they were when an incident opened, kept by content hash."""

    __tablename__ = "template_sets"

    version: str = Field(primary_key=True)
    files: dict[str, str] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = _utc()


class RateBucket(SQLModel, table=True):
    """A limit's allowance for one key (an API key's events, a client's failed authentications
    or acknowledgement requests), kept in the database so that every replica spends from the
    same bucket (``rate_buckets``)."""

    __tablename__ = "rate_buckets"

    key_id: str = Field(primary_key=True)
    """The limit and its key: ``events:<API key id>``, ``auth:<client>``, ``ack:<client>``."""
    allowed_from: float
    """When (Unix seconds) the key's bucket would be empty: each request taken moves it on by one
    token's worth of time, never to more than a whole burst ahead of now."""


class ConsoleUser(SQLModel, table=True):
    """A person of the manufacturer's team who signs in to the console."""

    __tablename__ = "console_users"

    id: str = Field(primary_key=True)
    email: str = Field(unique=True, index=True)
    """Lower case: the address someone signs in with, whatever case they type."""
    role: str
    """``viewer`` reads; ``qa`` may also post follow-ups and sign decision revisions."""
    name: str | None = None
    """The person's full name, printed on what they sign; an account without one cannot sign."""
    password_hash: str
    """Argon2id, in the PHC string format (parameters and salt included)."""
    created_at: datetime = _utc()
    password_changed_at: datetime = _utc()
    """Sessions begun before this are over: a reset password signs everyone out."""
    disabled_at: datetime | None = _utc(default=None)


class DecisionProposal(SQLModel, table=True):
    """A revision of a decision waiting for a second person: proposed by a QA user (signed) or
    by the QA system's API key, it takes effect only once a QA user other than its proposer
    approves it with their signature; until then the decision in force stands."""

    __tablename__ = "decision_proposals"

    id: str = Field(primary_key=True)
    incident_id: str = Field(foreign_key="incidents.id", index=True)
    response: str
    decided_by: str
    """The contact id of the decider whose decision it records."""
    reason: str = Field(sa_column=Column(Text, nullable=False))
    status: str = "pending"
    """``pending``, then ``approved`` (it took effect) or ``rejected``."""
    proposed_by: str
    """The QA user's address, or ``api key <name>`` for a proposal from the QA system."""
    proposed_for: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    """For a proposal by API key: the person the calling system names, as it names them."""
    proposal_signature: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    """The proposer's signature, for a proposal made in the console; as in the audit entry."""
    proposed_at: datetime = _utc()
    settled_by: str | None = None
    """The QA user who approved or rejected it."""
    settled_signature: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    settled_at: datetime | None = _utc(default=None)
    acknowledgement_id: str | None = None
    """The decision it recorded, once approved."""


class ConsoleSession(SQLModel, table=True):
    """A signed-in browser. The cookie holds a random token; the row is keyed by its hash, so
    a copy of the database cannot be replayed as a cookie."""

    __tablename__ = "console_sessions"

    id: str = Field(primary_key=True)
    """SHA-256 of the token in the cookie."""
    user_id: str = Field(foreign_key="console_users.id", index=True)
    csrf_token: str
    created_at: datetime = _utc()
    last_seen_at: datetime = _utc()
    """The last page the person asked for (refreshes of a live page do not count)."""
    ended_at: datetime | None = _utc(default=None)
    client_address: str | None = None
    user_agent: str | None = None


class SignInAttempt(SQLModel, table=True):
    """Every sign-in attempt, kept to throttle guessing per account and per client."""

    __tablename__ = "console_sign_in_attempts"
    __table_args__ = (
        Index("ix_console_sign_in_attempts_email_at", "email", "at"),
        Index("ix_console_sign_in_attempts_client_at", "client_address", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _utc()
    email: str
    """As typed, lower case (an unknown address is throttled like a known one)."""
    client_address: str
    outcome: str
    """``checking`` (counted, its password being checked), then ``signed_in`` or ``refused``
    (wrong password, unknown or disabled account); or ``throttled`` (not checked: too many
    refusals)."""


class InboundMessage(SQLModel, table=True):
    """A mail that came back to a return address (a bounce, an automatic reply, a reply), and
    what it did. Recorded once: its place in the mailbox and its Message-ID are unique, so a
    restart, a second reader or a redelivery finds it done."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        UniqueConstraint("source", "uidvalidity", "uid", name="uq_inbound_messages_place"),
    )

    id: str = Field(primary_key=True)
    source: str
    """Where it was read: ``imap://user@host:port/folder``, or ``smtp``."""
    uidvalidity: int | None = Field(default=None, sa_type=BigInteger)
    uid: int | None = Field(default=None, sa_type=BigInteger)
    """The message's IMAP UID (32-bit unsigned, hence the big integers) in ``source``."""
    message_key: str | None = Field(default=None, unique=True)
    """A hash of the Message-ID (or of the whole message, without one); left empty when the
    message could not be processed, so that a redelivery of it is tried again."""
    message_id: str | None = None
    received_at: datetime = _utc(index=True)
    kind: str = Field(index=True)
    """``bounce``, ``delay``, ``auto_reply``, ``reply``, ``report`` or ``unreadable``."""
    outcome: str = Field(index=True)
    notification_id: str | None = Field(default=None, foreign_key="notifications.id", index=True)
    incident_id: str | None = Field(default=None, foreign_key="incidents.id", index=True)
    sender: str | None = None
    """The From address."""
    subject: str | None = None
    text: str | None = Field(default=None, sa_column=Column(Text))
    """The first lines of an automatic reply, or the person's own text of a reply."""
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class ForwardedReply(SQLModel, table=True):
    """Links a message to the manufacturer's QA to the center's reply it forwards."""

    __tablename__ = "forwarded_replies"

    notification_id: str = Field(foreign_key="notifications.id", primary_key=True)
    inbound_message_id: str = Field(foreign_key="inbound_messages.id", index=True)


class CallTask(SQLModel, table=True):
    """A phone call somebody of the manufacturer must make to a center, and what came of it:
    opened by an agreement's call rule or by a request to be called (``call_tasks``)."""

    __tablename__ = "call_tasks"

    id: str = Field(primary_key=True)
    incident_id: str = Field(foreign_key="incidents.id", index=True)
    rule: str
    """The call rule that opened it, or what asked for the call (``center request``)."""
    reason: str
    """Why the call is needed, as the caller reads it: ``severity critical``."""
    round: int = 1
    """The incident's escalation round it was opened in: a rule opens one task per round."""
    caller_role: str
    """The manufacturer role that makes the call (``manufacturer:medical_affairs``)."""
    escalate: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    """The roles told by email when the task is still open at ``due_at``."""
    numbers: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    """Whom to call and on which number: ``[{"name", "role", "phone"}]``, the center's on-call
    line first."""
    status: str = Field(index=True)
    """``open`` or ``closed`` (``CallTaskStatus``)."""
    opened_at: datetime = _utc()
    due_at: datetime = _utc(index=True)
    escalated_at: datetime | None = _utc(default=None)
    closed_at: datetime | None = _utc(default=None)
    closed_by: str | None = None
    """Who recorded the call: a console user's address or an API key's name."""
    reached_name: str | None = None
    reached_number: str | None = None
    reached_at: datetime | None = _utc(default=None)
    outcome: str | None = Field(default=None, sa_column=Column(Text))


class CallTaskNotice(SQLModel, table=True):
    """Links a message (to the caller, or its escalation) to the call task it is about."""

    __tablename__ = "call_task_notices"

    notification_id: str = Field(foreign_key="notifications.id", primary_key=True)
    call_task_id: str = Field(foreign_key="call_tasks.id", index=True)


class Timer(SQLModel, table=True):
    """Something the service must do at an instant with no event arriving (a severity rule's
    threshold crossed, a call task's deadline): a row the dispatcher claims when it is due,
    like a notification, so that a restart or another replica loses none and runs none twice."""

    __tablename__ = "timers"
    __table_args__ = (Index("ix_timers_due", "status", "due_at"),)

    id: str = Field(primary_key=True)
    incident_id: str = Field(foreign_key="incidents.id", index=True)
    kind: str
    """``clock_rules`` (re-apply the severity and call rules) or ``call_task_due``."""
    subject_id: str | None = None
    """The call task a ``call_task_due`` timer is for."""
    due_at: datetime = _utc()
    status: str
    """``scheduled``, ``done`` or ``cancelled``."""
    created_at: datetime = _utc()
    done_at: datetime | None = _utc(default=None)


class PasskeyCredential(SQLModel, table=True):
    """A decider's passkey, enrolled once from the link of an email made out to them: the public
    key their decisions' signatures are verified with, and the name they are printed with."""

    __tablename__ = "passkey_credentials"

    id: str = Field(primary_key=True)
    """The credential id the authenticator chose, base64url."""
    person: str = Field(index=True)
    """Whom it identifies: the decider's email address, lower case."""
    printed_name: str
    """The decider's name as the email that carried the enrolment link addressed them."""
    public_key: str
    """The credential's COSE public key, base64url."""
    sign_count: int = Field(default=0, sa_type=BigInteger)
    enrolled_at: datetime = _utc()
    enrolled_from: str = Field(foreign_key="notifications.id")
    """The notification whose link the decider enrolled from."""
    removed_at: datetime | None = _utc(default=None)
    """When the operator removed it (a lost device): it signs nothing more, and the person may
    enrol again. Kept, so what it signed before can still be traced to its enrolment."""


class AgreementVersion(SQLModel, table=True):
    """One version of the agreements under change control: proposed by one console user,
    approved with a second one's signature and an effective time, or rejected; superseded once
    a later approved version takes effect (``agreement_versions``)."""

    __tablename__ = "agreement_versions"
    __table_args__ = (Index("ix_agreement_versions_state_effective", "state", "effective_at"),)

    id: int | None = Field(default=None, primary_key=True)
    content_sha256: str = Field(index=True)
    """SHA-256 of ``content`` in canonical JSON: what names the version."""
    content: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    """The validated config: the manufacturer, the health systems with their sites, the plans."""
    state: str
    """``proposed``, ``approved``, ``rejected`` or ``superseded`` (``VersionState``)."""
    based_on: int | None = None
    """The version in force when this one was proposed: what ``diff`` is from."""
    diff: str = Field(sa_column=Column(Text, nullable=False))
    proposed_by: str
    """The proposer's console address; ``installation`` for the version adopted at the first
    start."""
    proposed_at: datetime = _utc()
    approved_by: str | None = None
    approved_at: datetime | None = _utc(default=None)
    approval_signature: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    """The approver's signature (``signatures.signed``), as in the approval's audit entry."""
    effective_at: datetime | None = _utc(default=None)
    rejected_by: str | None = None
    rejected_at: datetime | None = _utc(default=None)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    """Why it was rejected."""
    superseded_at: datetime | None = _utc(default=None)
