"""The data map: every stored field of the vault, declared once.

Storage (columns and encryption), validation, access control categories,
exports, extracts and erasure all read this module; no other module keeps a
list of fields. Invariants checked at import time by ``_check``:

* every field name is unique within its table;
* a blind-indexed field is encrypted;
* a field of category ``health``/``treatment``/``financial`` or an
  ``identity`` document number is ``sensitive``;
* an enum field names its value set, and only enum fields do;
* a direct identifier is never released in an extract.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from vault import value_sets as vs


class Table(StrEnum):
    members = "members"
    treatments = "treatments"
    ledger_entries = "ledger_entries"


class Category(StrEnum):
    membership = "membership"
    identity = "identity"
    contact = "contact"
    demographic = "demographic"
    health = "health"
    preference = "preference"
    treatment = "treatment"
    financial = "financial"


class Sensitivity(StrEnum):
    personal = "personal"
    sensitive = "sensitive"


class Kind(StrEnum):
    """How a value is typed, validated and encoded."""

    text = "text"
    enum = "enum"
    date = "date"
    datetime = "datetime"
    phone = "phone"
    email = "email"
    document_number = "document_number"
    card_no = "card_no"
    clinic_id = "clinic_id"
    staff_id = "staff_id"
    text_list = "text_list"
    enum_list = "enum_list"
    money = "money"
    integer = "integer"


class Retention(StrEnum):
    """What erasure does with a field.

    ``member``: destroyed with the member's data key (crypto-shredded).
    ``medical_record``: kept, restricted, for 15 years after the treatment
    (encrypted under the member's retention key for the expiry year).
    ``plain_metadata``: unencrypted, non-identifying on its own; kept as a
    tombstone so audit references and ledger arithmetic stay meaningful.
    """

    member = "member"
    medical_record = "medical_record"
    plain_metadata = "plain_metadata"


class ExtractRole(StrEnum):
    """How an extract may release a field (see DESIGN.md, Pseudonymized extracts)."""

    direct_identifier = "direct_identifier"  # never released
    quasi_identifier = "quasi_identifier"  # released generalized, counted for k
    sensitive = "sensitive"  # released only under l-diversity and health_data consent
    attribute = "attribute"  # released as is (stated preferences, tier)
    not_released = "not_released"


MEDICAL_RETENTION_YEARS = 15


@dataclass(frozen=True, slots=True)
class Field:
    table: Table
    name: str
    category: Category
    kind: Kind
    sensitivity: Sensitivity
    encrypted: bool
    blind_indexed: bool = False
    retention: Retention = Retention.member
    extract: ExtractRole = ExtractRole.not_released
    generalization: tuple[str, ...] = ()
    value_set: type[StrEnum] | None = None
    max_length: int = 200
    max_items: int = 0
    required: bool = False

    @property
    def qualified_name(self) -> str:
        return f"{self.table.value}.{self.name}"


P, S = Sensitivity.personal, Sensitivity.sensitive
M, T, L = Table.members, Table.treatments, Table.ledger_entries
C = Category
K = Kind
X = ExtractRole
MED = Retention.medical_record
PLAIN = Retention.plain_metadata

FIELDS: tuple[Field, ...] = (
    # membership
    Field(M, "card_no", C.membership, K.card_no, P, True, True, extract=X.direct_identifier, max_length=32, required=True),
    Field(M, "tier", C.membership, K.enum, P, False, retention=PLAIN, extract=X.attribute, value_set=vs.Tier, required=True),
    Field(M, "status", C.membership, K.enum, P, False, retention=PLAIN, value_set=vs.MemberStatus, required=True),
    Field(M, "joined_at", C.membership, K.date, P, False, retention=PLAIN, extract=X.quasi_identifier, generalization=("year",), required=True),
    Field(
        M,
        "home_clinic_id",
        C.membership,
        K.clinic_id,
        P,
        False,
        retention=PLAIN,
        extract=X.quasi_identifier,
        generalization=("clinic", "city", "province"),
        max_length=32,
        required=True,
    ),
    # identity
    Field(M, "full_name", C.identity, K.text, P, True, extract=X.direct_identifier, max_length=100, required=True),
    Field(M, "id_type", C.identity, K.enum, P, True, value_set=vs.IdType),
    Field(M, "national_id", C.identity, K.document_number, S, True, True, extract=X.direct_identifier, max_length=32),
    Field(M, "date_of_birth", C.identity, K.date, P, True, extract=X.quasi_identifier, generalization=("age_band_5", "age_band_10", "age_band_20")),
    Field(M, "gender", C.identity, K.enum, P, True, extract=X.quasi_identifier, generalization=("gender", "*"), value_set=vs.Gender),
    # contact
    Field(M, "phone", C.contact, K.phone, P, True, True, extract=X.direct_identifier, max_length=20),
    Field(M, "email", C.contact, K.email, P, True, True, extract=X.direct_identifier, max_length=254),
    Field(M, "address", C.contact, K.text, P, True, extract=X.direct_identifier, max_length=300),
    Field(M, "wechat_id", C.contact, K.text, P, True, extract=X.direct_identifier, max_length=64),
    Field(M, "preferred_channel", C.contact, K.enum, P, True, extract=X.attribute, value_set=vs.Channel),
    # demographic
    Field(M, "city", C.demographic, K.text, P, True, extract=X.quasi_identifier, generalization=("city", "province", "region"), max_length=64),
    Field(M, "occupation", C.demographic, K.text, P, True, max_length=100),
    Field(M, "education", C.demographic, K.enum, P, True, extract=X.quasi_identifier, generalization=("education", "degree", "*"), value_set=vs.Education),
    Field(
        M,
        "income_band",
        C.demographic,
        K.enum,
        P,
        True,
        extract=X.quasi_identifier,
        generalization=("income_band", "income_wide", "*"),
        value_set=vs.IncomeBand,
    ),
    Field(M, "marital_status", C.demographic, K.enum, P, True, value_set=vs.MaritalStatus),
    # health
    Field(M, "allergies", C.health, K.text_list, S, True, extract=X.sensitive, max_length=100, max_items=50),
    Field(M, "medical_history", C.health, K.text, S, True, max_length=4000),
    Field(M, "contraindications", C.health, K.text_list, S, True, extract=X.sensitive, max_length=100, max_items=50),
    Field(M, "skin_type", C.health, K.enum, S, True, extract=X.sensitive, value_set=vs.SkinType),
    Field(M, "pregnancy_status", C.health, K.enum, S, True, value_set=vs.PregnancyStatus),
    # preference
    Field(M, "interest_tags", C.preference, K.text_list, P, True, extract=X.attribute, max_length=40, max_items=30),
    Field(
        M, "preferred_categories", C.preference, K.enum_list, P, True, extract=X.attribute, value_set=vs.TreatmentCategory, max_items=len(vs.TreatmentCategory)
    ),
    Field(M, "preferred_clinic_id", C.preference, K.clinic_id, P, True, extract=X.attribute, max_length=32),
    # treatment records: plain columns for queries, clinical fields under the retention key
    Field(T, "performed_at", C.treatment, K.datetime, S, False, retention=PLAIN, extract=X.attribute, generalization=("month",), required=True),
    Field(T, "clinic_id", C.treatment, K.clinic_id, S, False, retention=PLAIN, max_length=32, required=True),
    Field(T, "category", C.treatment, K.enum, S, False, retention=PLAIN, extract=X.attribute, value_set=vs.TreatmentCategory, required=True),
    Field(T, "practitioner_id", C.treatment, K.staff_id, S, True, retention=MED, max_length=64, required=True),
    Field(T, "procedure", C.treatment, K.text, S, True, retention=MED, max_length=200, required=True),
    Field(T, "product", C.treatment, K.text, S, True, retention=MED, max_length=200),
    Field(T, "lot_no", C.treatment, K.text, S, True, retention=MED, max_length=64),
    Field(T, "dose", C.treatment, K.text, S, True, retention=MED, max_length=64),
    Field(T, "body_area", C.treatment, K.text, S, True, retention=MED, max_length=100),
    Field(T, "clinical_notes", C.treatment, K.text, S, True, retention=MED, max_length=4000),
    Field(T, "adverse_events", C.treatment, K.text, S, True, retention=MED, max_length=2000),
    Field(T, "follow_up_at", C.treatment, K.date, S, True, retention=MED),
    Field(T, "price", C.treatment, K.money, S, True, retention=MED, extract=X.attribute),
    # card ledger: entry type and time plain, amounts encrypted
    Field(L, "entry_type", C.financial, K.enum, S, False, retention=PLAIN, value_set=vs.LedgerEntryType, required=True),
    Field(L, "occurred_at", C.financial, K.datetime, S, False, retention=PLAIN, required=True),
    Field(L, "amount", C.financial, K.money, S, True, extract=X.attribute, required=True),
    Field(L, "points", C.financial, K.integer, S, True),
    Field(L, "balance_after", C.financial, K.money, S, True),
    Field(L, "points_balance_after", C.financial, K.integer, S, True),
)


@functools.cache
def fields_of(table: Table) -> tuple[Field, ...]:
    return tuple(f for f in FIELDS if f.table is table)


@functools.cache
def fields_by_name(table: Table) -> Mapping[str, Field]:
    return MappingProxyType({f.name: f for f in fields_of(table)})


def field(table: Table, name: str) -> Field:
    for f in FIELDS:
        if f.table is table and f.name == name:
            return f
    raise KeyError(f"{table.value}.{name}")


def categories_of(table: Table) -> tuple[Category, ...]:
    seen: dict[Category, None] = {}
    for f in fields_of(table):
        seen.setdefault(f.category, None)
    return tuple(seen)


def member_fields_by_category() -> dict[Category, tuple[Field, ...]]:
    return {c: tuple(f for f in fields_of(Table.members) if f.category is c) for c in categories_of(Table.members)}


def blind_indexed() -> tuple[Field, ...]:
    return tuple(f for f in FIELDS if f.blind_indexed)


def _check() -> None:
    seen: set[str] = set()
    for f in FIELDS:
        if f.qualified_name in seen:
            raise AssertionError(f"duplicate field {f.qualified_name}")
        seen.add(f.qualified_name)
        if f.blind_indexed and not f.encrypted:
            raise AssertionError(f"{f.qualified_name}: blind index without encryption")
        if f.category in (C.health, C.treatment, C.financial) and f.sensitivity is not S:
            raise AssertionError(f"{f.qualified_name}: must be sensitive")
        if (f.kind in (K.enum, K.enum_list)) != (f.value_set is not None):
            raise AssertionError(f"{f.qualified_name}: value set mismatch")
        if f.retention is MED and not f.encrypted:
            raise AssertionError(f"{f.qualified_name}: retained clinical field must be encrypted")
        if not f.encrypted and f.retention is not PLAIN:
            raise AssertionError(f"{f.qualified_name}: plain field must be plain_metadata")


_check()

__all__ = [
    "FIELDS",
    "MEDICAL_RETENTION_YEARS",
    "Category",
    "ExtractRole",
    "Field",
    "Kind",
    "Retention",
    "Sensitivity",
    "Table",
    "blind_indexed",
    "categories_of",
    "field",
    "fields_by_name",
    "fields_of",
    "member_fields_by_category",
]
