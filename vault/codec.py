"""Encoding of field values to bytes before encryption, and back.

A value is encoded by its data-map ``Kind``: a string kind as its UTF-8 bytes,
a date or datetime as its ISO 8601 string, lists and numbers as compact JSON
(UTF-8, no ASCII escaping). Decoding restores the Python type from the same
``Kind``. Rows are encrypted field by field with
``keys.field_cipher``; the record id in the associated data is the row's
primary key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime

from keys.errors import DecryptionError
from keys.field_cipher import FieldCipher, FieldContext
from vault import data_map as dm
from vault.errors import RecordIntegrityError

_JSON_KINDS = frozenset({dm.Kind.text_list, dm.Kind.enum_list, dm.Kind.money, dm.Kind.integer})


def encode(f: dm.Field, value: object) -> bytes:
    if f.kind in _JSON_KINDS:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    if isinstance(value, datetime | date):
        return value.isoformat().encode()
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"{f.qualified_name}: cannot encode a {type(value).__name__}")


def decode(f: dm.Field, raw: bytes) -> object:
    if f.kind in _JSON_KINDS:
        return json.loads(raw)
    text = raw.decode()
    if f.kind is dm.Kind.date:
        return date.fromisoformat(text)
    if f.kind is dm.Kind.datetime:
        return datetime.fromisoformat(text)
    return text


def seal(cipher: FieldCipher, f: dm.Field, record_id: str, value: object, *, table: str | None = None) -> bytes | None:
    """Encrypt one value where it will be stored (``table`` defaults to the field's own)."""
    if value is None:
        return None
    return cipher.encrypt(encode(f, value), FieldContext(table or f.table.value, record_id, f.name))


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


class _RowFields:
    """The fields of one table's rows, in order, and which of them are encrypted (for ``RowSealer`` and ``RowOpener``)."""

    __slots__ = ("_encrypted", "_names", "_table", "fields")

    def __init__(self, fields: Sequence[dm.Field]) -> None:
        tables = {f.table for f in fields}
        if len(tables) != 1:
            raise ValueError("a row's fields are of one table")
        self.fields = tuple(fields)
        self._table = tables.pop().value
        self._names = tuple(f.name for f in self.fields)
        self._encrypted = tuple(i for i, f in enumerate(self.fields) if f.encrypted)


class RowSealer(_RowFields):
    """``to_columns`` for bulk writers: a row's column values in field order, its encryptions in one cipher call.

    ``row`` gives, for each of ``fields`` (of one table) in order, what
    ``to_columns`` stores for it (``None`` where the values have none): the same
    encoding, associated data and ciphertext format, so ``open_sealed`` reads
    them; only the nonces are drawn at once (``FieldCipher.encrypt_record``).
    """

    __slots__ = ("_encoders",)

    def __init__(self, fields: Sequence[dm.Field]) -> None:
        super().__init__(fields)
        self._encoders = {i: _encoder(self.fields[i]) for i in self._encrypted}

    def row(self, cipher: FieldCipher, record_id: str, values: Mapping[str, object]) -> list[object]:
        out = [values.get(name) for name in self._names]
        at = [i for i in self._encrypted if out[i] is not None]
        if at:
            names, encoders = self._names, self._encoders
            sealed = cipher.encrypt_record(self._table, record_id, [names[i] for i in at], [encoders[i](out[i]) for i in at])
            for i, ciphertext in zip(at, sealed, strict=True):
                out[i] = ciphertext
        return out


class RowOpener(_RowFields):
    """``open_sealed`` for bulk readers: a row's stored values in field order, its decryptions in one cipher call.

    ``row`` gives, for each of ``fields`` (of one table) in order, what
    ``open_sealed`` returns for an encrypted field (``None`` stays ``None``) and
    the stored value as it is for a plain one: the same associated data and
    decoding (``FieldCipher.decrypt_record``, decoders picked once per field).
    Any failure is ``open_sealed``'s ``RecordIntegrityError`` naming the field
    (the row is opened again field by field to find it).
    """

    __slots__ = ("_decoders",)

    def __init__(self, fields: Sequence[dm.Field]) -> None:
        super().__init__(fields)
        self._decoders = {i: _decoder(self.fields[i]) for i in self._encrypted}

    def row(self, cipher: FieldCipher, record_id: str, stored: Sequence[object]) -> list[object]:
        out = list(stored)
        at: list[int] = []
        sealed: list[bytes] = []
        for i in self._encrypted:
            value = out[i]
            if value is None:
                continue
            if type(value) is not bytes:  # the drivers give bytes; anything else is checked and copied
                if not isinstance(value, _BYTES_LIKE):
                    raise TypeError(f"{self._table}.{self._names[i]}: a stored ciphertext is bytes")
                value = bytes(value)
            at.append(i)
            sealed.append(value)
        if not at:
            return out
        names, decoders = self._names, self._decoders
        try:
            for i, raw in zip(at, cipher.decrypt_record(self._table, record_id, [names[i] for i in at], sealed), strict=True):
                out[i] = decoders[i](raw)
        except (DecryptionError, ValueError):
            for i, value in zip(at, sealed, strict=True):  # the failing field, named as ``open_sealed`` names it
                out[i] = open_sealed(cipher, self.fields[i], record_id, value)
        return out


_BYTES_LIKE = (bytes, bytearray, memoryview)
_JSON_TEXT = json.JSONDecoder()


def _decoder(f: dm.Field) -> Callable[[bytes], object]:
    """``decode`` for one field, with the common cases first (an int's JSON is its decimal digits)."""
    if f.kind in (dm.Kind.money, dm.Kind.integer):
        return lambda raw: int(raw) if raw.isdigit() and (len(raw) == 1 or raw[0] != 0x30) else json.loads(raw)
    if f.kind in _JSON_KINDS:
        return _json_text
    if f.kind is dm.Kind.date:
        return lambda raw: date.fromisoformat(raw.decode())
    if f.kind is dm.Kind.datetime:
        return lambda raw: datetime.fromisoformat(raw.decode())
    return lambda raw: raw.decode()


def _json_text(raw: bytes) -> object:
    """``json.loads`` of UTF-8 JSON text: one ``raw_decode`` when the value fills the text (as ``encode`` writes it), else the full ``decode``.

    ``decode`` is ``raw_decode`` after and before skipping whitespace (two
    regular-expression matches, about 0.6 µs a value), then a check that
    nothing follows: text with whitespace around its value, or not JSON, takes
    that path and gets its answer or its error.
    """
    text = raw.decode()
    try:
        value, end = _JSON_TEXT.raw_decode(text)
    except ValueError:
        return _JSON_TEXT.decode(text)
    return value if end == len(text) else _JSON_TEXT.decode(text)


_COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # json.dumps(value, ensure_ascii=False, separators=...)


def _encoder(f: dm.Field) -> Callable[[object], bytes]:
    """``encode`` for one field, with the common types first (an int's JSON is its decimal digits)."""
    if f.kind in _JSON_KINDS:
        return lambda value: str(value).encode() if type(value) is int else _COMPACT_JSON.encode(value).encode()
    return lambda value: value.encode() if type(value) is str else encode(f, value)


__all__ = ["RowOpener", "RowSealer", "decode", "encode", "open_sealed", "seal", "to_columns"]
