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
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
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

__all__ = ["blind_index", "erasures", "field_history", "ledger_entries", "members", "metadata", "treatments"]
