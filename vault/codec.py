"""Encoding of field values to bytes before encryption, and back.

A value is JSON (UTF-8, compact, no ASCII escaping) of its normalized form:
strings as strings, dates and datetimes as ISO 8601 strings, lists as arrays,
money and integers as numbers. Decoding restores the Python type from the
data map's ``Kind``. Rows are encrypted field by field with
``keys.field_cipher``; the record id in the associated data is the row's
primary key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import date, datetime

from keys.errors import DecryptionError
from keys.field_cipher import FieldCipher, FieldContext
from vault import data_map as dm
from vault.errors import RecordIntegrityError


def encode(value: object) -> bytes:
    if isinstance(value, datetime | date):
        value = value.isoformat()
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def decode(f: dm.Field, raw: bytes) -> object:
    value = json.loads(raw)
    if f.kind is dm.Kind.date:
        return date.fromisoformat(value)
    if f.kind is dm.Kind.datetime:
        return datetime.fromisoformat(value)
    return value


def seal(cipher: FieldCipher, f: dm.Field, record_id: str, value: object, *, table: str | None = None) -> bytes | None:
    """Encrypt one value where it will be stored (``table`` defaults to the field's own)."""
    if value is None:
        return None
    return cipher.encrypt(encode(value), FieldContext(table or f.table.value, record_id, f.name))


def open_sealed(cipher: FieldCipher, f: dm.Field, record_id: str, sealed: bytes | None, *, table: str | None = None) -> object:
    """Decrypt one stored value; any failure is a RecordIntegrityError naming where."""
    if sealed is None:
        return None
    where = table or f.table.value
    try:
        return decode(f, cipher.decrypt(bytes(sealed), FieldContext(where, record_id, f.name)))
    except (DecryptionError, ValueError) as exc:
        raise RecordIntegrityError(where, record_id, f.name) from exc


def to_columns(cipher: FieldCipher, fields: Iterable[dm.Field], record_id: str, values: Mapping[str, object]) -> dict[str, object]:
    """Column values for a row: encrypted fields sealed, plain fields as they are."""
    out: dict[str, object] = {}
    for f in fields:
        if f.name in values:
            value = values[f.name]
            out[f.name] = seal(cipher, f, record_id, value) if f.encrypted else value
    return out


__all__ = ["decode", "encode", "open_sealed", "seal", "to_columns"]
