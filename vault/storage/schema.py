"""The data database's tables, with the data-map columns generated from the data map.

Each of ``members``, ``treatments`` and ``ledger_entries`` has a few structural
columns declared here and one column per data-map field: an encrypted field is
a nullable ``Ciphertext`` (binary) column holding a field-cipher ciphertext (see
``keys.field_cipher``), a plain field a typed column. No other module lists
fields. ``field_history`` keeps previous values (encrypted) on rectification;
``blind_index`` holds HMAC digests for equality search; ``erasures`` records
the steps of a crypto-shredding so an interrupted erasure resumes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from audit.store import NAMING_CONVENTION, UtcDateTime
from vault import data_map as dm

metadata = MetaData(naming_convention=NAMING_CONVENTION)

ID_LENGTH = 32


class Ciphertext(LargeBinary):
    """A field-cipher ciphertext: ``bytes`` go to the driver as they are (no per-value wrapping)."""

    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


def _plain_type(f: dm.Field) -> TypeEngine[Any]:
    match f.kind:
        case dm.Kind.date:
            return Date()
        case dm.Kind.datetime:
            return UtcDateTime()
        case dm.Kind.money | dm.Kind.integer:
            return BigInteger()
        case _:
            return String(f.max_length if f.kind is not dm.Kind.enum else 32)


def _data_columns(table: dm.Table) -> list[Column[object]]:
    return [Column(f.name, Ciphertext() if f.encrypted else _plain_type(f), nullable=not (f.required and not f.encrypted)) for f in dm.fields_of(table)]


def _ts(name: str, *, nullable: bool = False) -> Column[object]:
    return Column(name, UtcDateTime(), nullable=nullable)


members = Table(
    "members",
    metadata,
    Column("member_id", String(ID_LENGTH), primary_key=True),
    Column("key_version", Integer, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("erased_at", nullable=True),
    *_data_columns(dm.Table.members),
)

treatments = Table(
    "treatments",
    metadata,
    Column("treatment_id", String(ID_LENGTH), primary_key=True),
    Column("member_id", String(ID_LENGTH), ForeignKey("members.member_id"), nullable=False),
    Column("retention_year", Integer, nullable=False),
    _ts("created_at"),
    *_data_columns(dm.Table.treatments),
    Index(None, "member_id", "performed_at"),
    Index(None, "clinic_id", "performed_at"),
    Index(None, "member_id", "category", "performed_at"),  # covers an extract's treatment counts by category
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("entry_id", String(ID_LENGTH), primary_key=True),
    Column("member_id", String(ID_LENGTH), ForeignKey("members.member_id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("key_version", Integer, nullable=False),
    _ts("created_at"),
    *_data_columns(dm.Table.ledger_entries),
    Index(None, "member_id", "seq", unique=True),
    Index(None, "member_id", "entry_type", "occurred_at"),  # an extract's spends of the last 12 months
)

field_history = Table(
    "field_history",
    metadata,
    Column("history_id", String(ID_LENGTH), primary_key=True),
    Column("member_id", String(ID_LENGTH), ForeignKey("members.member_id"), nullable=False),
    Column("change_id", String(ID_LENGTH), nullable=False),
    Column("table_name", String(32), nullable=False),
    Column("record_id", String(ID_LENGTH), nullable=False),
    Column("field", String(64), nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("previous", Ciphertext(), nullable=True),
    _ts("changed_at"),
    Index(None, "member_id", "changed_at"),
)

blind_index = Table(
    "blind_index",
    metadata,
    Column("field", String(64), primary_key=True),
    Column("digest", LargeBinary(32), primary_key=True),
    Column("member_id", String(ID_LENGTH), ForeignKey("members.member_id"), primary_key=True),
    Index(None, "member_id"),
)

erasures = Table(
    "erasures",
    metadata,
    Column("member_id", String(ID_LENGTH), ForeignKey("members.member_id"), primary_key=True),
    Column("step", String(32), nullable=False),
    _ts("started_at"),
    _ts("completed_at", nullable=True),
)

# -- access: clinic links, break-glass reviews, idempotency, policy versions, clients, tokens ---------------

# A member is linked to a clinic domain by the home clinic, a treatment there or a front-desk check-in.
member_clinics = Table(
    "member_clinics",
    metadata,
    Column("member_id", String(ID_LENGTH), ForeignKey("members.member_id"), primary_key=True),
    Column("clinic_id", String(32), primary_key=True),
    Column("via", String(16), nullable=False),
    _ts("linked_at"),
    CheckConstraint("via IN ('home', 'treatment', 'check_in')", name="via"),
    Index(None, "clinic_id"),
)

# A break-glass read waits here for review by the dpo or a compliance officer; the audit event carries the same id.
break_glass_reviews = Table(
    "break_glass_reviews",
    metadata,
    Column("review_id", String(ID_LENGTH), primary_key=True),
    Column("member_id", String(ID_LENGTH), ForeignKey("members.member_id"), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("reason_code", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    _ts("requested_at"),
    Column("status", String(16), nullable=False),
    Column("reviewed_by", String(256), nullable=True),
    _ts("reviewed_at", nullable=True),
    Column("outcome", String(32), nullable=True),
    CheckConstraint("status IN ('pending', 'reviewed')", name="status"),
    Index(None, "status", "requested_at"),
)

# One row per (caller, Idempotency-Key): the first result, as ids and a status — never a personal value.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("caller", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_digest", LargeBinary(32), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", Text, nullable=False),
    _ts("created_at"),
)

# The active policy set is the highest version; every worker process loads it from here.
policy_versions = Table(
    "policy_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("policy_hash", String(80), nullable=False),
    Column("model", Text, nullable=False),
    Column("policy", Text, nullable=False),
    Column("activated_by", String(256), nullable=False),
    _ts("activated_at"),
)

# Service clients of the vault's own token endpoint; the secret is stored only as a keyed hash.
clients = Table(
    "clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("secret_digest", LargeBinary(32), nullable=False),
    Column("roles", String(512), nullable=False),
    Column("clinics", String(2048), nullable=False),
    _ts("created_at"),
    _ts("secret_rotated_at"),
    _ts("revoked_at", nullable=True),
)

revoked_tokens = Table(
    "revoked_tokens",
    metadata,
    Column("token_id", String(128), primary_key=True),
    _ts("expires_at"),
    _ts("revoked_at"),
)

# Failed attempts per bucket (a client id or a remote address) in the current window.
auth_throttle = Table(
    "auth_throttle",
    metadata,
    Column("bucket", String(128), primary_key=True),
    _ts("window_start"),
    Column("failures", Integer, nullable=False),
)

# -- consent: notice versions and the append-only grant/withdraw history ------------------------------------

# A published notice text (zh and en) of a purpose; versions only grow, and a row is never changed (triggers).
consent_notices = Table(
    "consent_notices",
    metadata,
    Column("purpose", String(32), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("text_zh", Text, nullable=False),
    Column("text_en", Text, nullable=False),
    Column("sha256_zh", String(64), nullable=False),
    Column("sha256_en", String(64), nullable=False),
    Column("notice_hash", String(64), nullable=False),
    Column("material", Boolean, nullable=False),
    _ts("effective_at"),
    _ts("published_at"),
    Column("published_by", String(256), nullable=False),
    CheckConstraint("version >= 1", name="version"),
)

# One grant or withdrawal; the current state is derived from these rows (``vault.consent.state``), never stored.
consent_events = Table(
    "consent_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), Identity(always=True), primary_key=True),
    Column("consent_id", String(ID_LENGTH), nullable=False, unique=True),
    Column("member_id", String(ID_LENGTH), ForeignKey("members.member_id"), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("decision", String(16), nullable=False),
    Column("notice_version", Integer, nullable=True),
    Column("notice_hash", String(64), nullable=True),
    Column("channel", String(16), nullable=False),
    Column("given_by", String(16), nullable=False),
    # The evidence reference (a scan or form id), encrypted under the member's data key; required off the app.
    Column("evidence", Ciphertext(), nullable=True),
    Column("recorded_by", String(256), nullable=False),
    Column("recorded_role", String(32), nullable=False),
    Column("request_id", String(64), nullable=False),
    _ts("recorded_at"),
    CheckConstraint("decision IN ('granted', 'withdrawn')", name="decision"),
    CheckConstraint("channel IN ('app', 'front_desk', 'paper', 'request')", name="channel"),
    CheckConstraint("given_by IN ('member', 'guardian')", name="given_by"),
    CheckConstraint("decision = 'withdrawn' OR (notice_version IS NOT NULL AND notice_hash IS NOT NULL)", name="grant_names_notice"),
    CheckConstraint("channel = 'app' OR evidence IS NOT NULL", name="evidence_off_app"),
    # A member's events for a purpose in order; the last one's decision and notice version from the index alone
    # (``ConsentService.live_among_on_driver`` asks it of every member an extract walks; migration 0013).
    Index("ix_consent_events_last_event", "member_id", "purpose", "seq", "decision", "notice_version"),
)

# -- data-subject requests: the request (its status moves) and its append-only steps --------------------------

_OPEN_STATUSES = "status IN ('received', 'verified', 'in_progress')"

data_requests = Table(
    "data_requests",
    metadata,
    Column("dsr_id", String(ID_LENGTH), primary_key=True),
    Column("member_id", String(ID_LENGTH), ForeignKey("members.member_id"), nullable=False),
    Column("type", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("jurisdiction", String(16), nullable=False),
    Column("filed_by", String(256), nullable=False),
    Column("filed_role", String(16), nullable=False),
    # Encrypted under the member's data key: a rectification's changes or an objection's purposes (JSON), the front desk's evidence reference.
    Column("details", Ciphertext(), nullable=True),
    Column("evidence", Ciphertext(), nullable=True),
    # An erasure's settlement: the refund ledger entry that paid back a positive card balance before shredding.
    Column("settlement_entry_id", String(ID_LENGTH), nullable=True),
    _ts("received_at"),
    _ts("due_at"),
    _ts("updated_at"),
    _ts("closed_at", nullable=True),
    CheckConstraint("type IN ('access', 'portability', 'rectification', 'erasure', 'restriction', 'objection')", name="type"),
    CheckConstraint("status IN ('received', 'verified', 'in_progress', 'completed', 'rejected', 'lifted')", name="status"),
    CheckConstraint("filed_role IN ('member', 'front_desk')", name="filed_role"),
    CheckConstraint("filed_role = 'member' OR evidence IS NOT NULL", name="evidence_off_app"),
    Index(None, "status", "due_at"),
    Index(None, "member_id", "type"),
    # At most one open request per member and type, whatever races.
    Index("uq_data_requests_open_type", "member_id", "type", unique=True, sqlite_where=text(_OPEN_STATUSES), postgresql_where=text(_OPEN_STATUSES)),
)

data_request_steps = Table(
    "data_request_steps",
    metadata,
    Column("step_id", String(ID_LENGTH), primary_key=True),
    Column("dsr_id", String(ID_LENGTH), ForeignKey("data_requests.dsr_id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("from_status", String(16), nullable=True),
    Column("to_status", String(16), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("actor_role", String(32), nullable=False),
    Column("reason_code", String(40), nullable=False),
    Column("note", Ciphertext(), nullable=True),  # encrypted under the member's data key; never in an audit event
    _ts("at"),
    UniqueConstraint("dsr_id", "seq"),
)

# -- pseudonymized extracts: consumers, their pseudonym epochs, extract jobs, who was in each, the deletion feed ---------

consumers = Table(
    "consumers",
    metadata,
    # A registered downstream consumer is a service client: its tokens' subject.
    Column("consumer_id", String(64), ForeignKey("clients.client_id"), primary_key=True),
    Column("purpose", String(32), nullable=False),
    Column("attributes", String(1024), nullable=False),  # JSON list of profile attribute names
    Column("health", Boolean, nullable=False),  # may receive health-derived attributes (of members with health_data consent)
    Column("k", Integer, nullable=False),
    Column("suppression_cap_permille", Integer, nullable=False),
    Column("formats", String(64), nullable=False),  # JSON list of ndjson, csv, parquet
    _ts("created_at"),
    CheckConstraint("k >= 2 AND k <= 1000", name="k"),
    CheckConstraint("suppression_cap_permille >= 0 AND suppression_cap_permille <= 500", name="suppression_cap"),
)

pseudonym_epochs = Table(
    "pseudonym_epochs",
    metadata,
    Column("consumer_id", String(64), ForeignKey("consumers.consumer_id"), primary_key=True),
    Column("epoch", Integer, primary_key=True),
    _ts("started_at"),
    # Fixed by the epoch's first extract, so later extracts cannot be intersected: JSON {attribute: level name}.
    Column("generalization", String(1024), nullable=True),
    CheckConstraint("epoch >= 1", name="epoch"),
)

extracts = Table(
    "extracts",
    metadata,
    Column("extract_id", String(ID_LENGTH), primary_key=True),
    Column("consumer_id", String(64), ForeignKey("consumers.consumer_id"), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("format", String(16), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("k", Integer, nullable=False),
    Column("since", String(64), nullable=True),  # an incremental extract: the id of its base extract
    Column("row_count", BigInteger, nullable=True),
    Column("content_sha256", String(64), nullable=True),
    Column("members_sha256", String(64), nullable=True),  # SHA-256 of the sorted list of included member ids
    Column("manifest", Text, nullable=True),  # the signed manifest (JWS)
    Column("reason", String(64), nullable=True),  # why it was refused or failed (a code)
    Column("requested_by", String(256), nullable=False),
    _ts("created_at"),
    _ts("finished_at", nullable=True),
    Column("content_bytes", BigInteger, nullable=True),  # the size of the released file
    _ts("heartbeat_at", nullable=True),  # a running job's last sign of life
    _ts("expires_at", nullable=True),  # its sealed data is purged after this (jobs run through the API)
    _ts("purged_at", nullable=True),
    Column("journal_id", BigInteger, nullable=True),  # the extract's audit event (audit_journal.journal_id)
    # The deletion feed's last ``seq`` when the extract was released: entries above it came after the consumer got these members.
    Column("feed_seq", BigInteger, nullable=True),
    CheckConstraint("format IN ('ndjson', 'csv', 'parquet')", name="format"),
    CheckConstraint("status IN ('running', 'done', 'refused', 'failed')", name="status"),
    Index(None, "consumer_id", "created_at"),
    # One running extract per consumer: a consumer cannot start jobs faster than they finish.
    Index("uq_extracts_running", "consumer_id", unique=True, sqlite_where=text("status = 'running'"), postgresql_where=text("status = 'running'")),
)

extract_members = Table(
    "extract_members",
    metadata,
    Column("extract_id", String(ID_LENGTH), ForeignKey("extracts.extract_id"), primary_key=True),
    Column("member_id", String(ID_LENGTH), ForeignKey("members.member_id"), primary_key=True),
    # A keyed digest of the row the member was released as: an incremental extract leaves out rows its base already held.
    Column("row_mac", String(32), nullable=True),
    # No index on member_id alone: an extract's members are spread over all of one, so every extract would rewrite it
    # whole (its cost growing with the history). A member's extracts are found by a seek of the key per extract.
    # On SQLite the table is the key's B-tree (WITHOUT ROWID, migration 0014): every read goes through the key, and a
    # rowid table would store each row twice.
    sqlite_with_rowid=False,
)

deletion_feed = Table(
    "deletion_feed",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), Identity(always=True), primary_key=True),
    Column("consumer_id", String(64), ForeignKey("consumers.consumer_id"), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("pseudonym", String(64), nullable=False),
    Column("reason", String(16), nullable=False),
    _ts("at"),
    CheckConstraint("reason IN ('withdrawn', 'erased', 'restricted', 'stale', 'suppressed')", name="reason"),
    Index(None, "consumer_id", "seq"),
    # Not unique: a pseudonym is fed again when an extract released it after its last entry (``vault.extracts.feed``).
    Index(None, "consumer_id", "epoch", "pseudonym", "seq"),
)

# A member who left (withdrew, was erased or restricted) while an extract of a purpose they left was running. That
# extract's snapshots may predate the departure: when it is released, it feeds those of them it included.
extract_departures = Table(
    "extract_departures",
    metadata,
    Column("extract_id", String(ID_LENGTH), ForeignKey("extracts.extract_id"), primary_key=True),
    Column("member_id", String(ID_LENGTH), ForeignKey("members.member_id"), primary_key=True),
    Column("reason", String(16), nullable=False),
    _ts("at"),
    CheckConstraint("reason IN ('withdrawn', 'erased', 'restricted')", name="reason"),
)

# A stale-consent moment (a material notice version, past its grace period) the deletion feed was swept for, once (``vault.extracts.stale``).
# No foreign key to ``consent_notices``: it would turn that table's TRUNCATE refusal from its own trigger into a reference error.
deletion_feed_sweeps = Table(
    "deletion_feed_sweeps",
    metadata,
    Column("purpose", String(32), primary_key=True),
    Column("notice_version", Integer, primary_key=True, autoincrement=False),
    _ts("stale_at"),  # the notice's effective_at plus the grace period: earlier grants stopped counting then
    _ts("swept_at"),
)

__all__ = [
    "auth_throttle",
    "blind_index",
    "break_glass_reviews",
    "clients",
    "consent_events",
    "consent_notices",
    "consumers",
    "data_request_steps",
    "data_requests",
    "deletion_feed",
    "deletion_feed_sweeps",
    "erasures",
    "extract_members",
    "extracts",
    "field_history",
    "idempotency_keys",
    "ledger_entries",
    "member_clinics",
    "members",
    "metadata",
    "policy_versions",
    "pseudonym_epochs",
    "revoked_tokens",
    "treatments",
]
