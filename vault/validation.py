"""Domain-boundary validation of field values, with typed errors.

Every value entering the vault passes :func:`validate_values` (or a normalizer it
uses); fields, kinds and limits come from :mod:`vault.data_map` only. Invariants:

* Output is normalized: text stripped of surrounding whitespace and otherwise
  unchanged; enum values as plain ``str``; dates as ``datetime.date``; datetimes
  aware and in UTC; phones in E.164; e-mail addresses lower-case; document and
  card numbers upper-case. Normalizing a normalized value returns it unchanged,
  which the blind index relies on.
* A refused value raises :class:`vault.errors.ValidationError` only, mapping
  field name → reason code, with every problem of the call at once.
* No message or reason code contains a value (values are personal data). A
  library's exception message is never passed on; where a single error is
  raised, the library exception is chained with ``from`` for the logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Final, TypeVar

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from vault.data_map import Field, Kind, Table, fields_by_name
from vault.errors import ValidationError
from vault.value_sets import IdType

MIN_YEAR: Final = 1900
MAX_YEAR: Final = 2200
MAX_MONEY: Final = 10**12  # fen
MAX_INTEGER: Final = 2**53  # the largest magnitude a JSON number holds exactly

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0, DEL, C1 but tab, LF
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?)"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
_RESIDENT_ID = re.compile(r"[0-9]{17}[0-9Xx]")
_CARD_NO = re.compile(r"[A-Za-z0-9-]{6,32}")
_CLINIC_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_STAFF_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_DOCUMENTS: Final[Mapping[IdType, re.Pattern[str]]] = {
    IdType.passport: re.compile(r"[A-Z0-9]{5,17}"),
    IdType.hk_macau_permit: re.compile(r"[HM](?:[0-9]{8}|[0-9]{10})"),
    IdType.taiwan_permit: re.compile(r"[0-9A-Z]{8}|[0-9A-Z]{10}"),
    IdType.foreign_permanent_resident: re.compile(r"[A-Z]{3}[0-9]{12}|9[0-9]{16}[0-9X]"),
}
_WEIGHTS: Final = tuple(pow(2, 17 - i, 11) for i in range(17))  # ISO 7064 MOD 11-2

_T = TypeVar("_T")


class _InvalidError(Exception):
    """One value refused; its only argument is the reason code, never the value."""


def _single(name: str, check: Callable[[], _T]) -> _T:
    try:
        return check()
    except _InvalidError as exc:
        raise ValidationError({name: str(exc)}) from exc.__cause__


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise _InvalidError("invalid_type")
    return str.__str__(value)  # a plain str, also for a StrEnum member


def _text(value: object, max_length: int) -> str | None:
    text = _str(value)
    if _SURROGATE.search(text):
        raise _InvalidError("invalid_text")
    if _CONTROL.search(text):
        raise _InvalidError("control_character")
    text = text.strip()
    if len(text) > max_length:
        raise _InvalidError("too_long")
    return text or None


def _enum(value_set: type[StrEnum] | None, value: object) -> str:
    if value_set is None:  # excluded by data_map's own check
        raise TypeError("enum field without a value set")
    try:
        return str(value_set(_str(value)).value)
    except ValueError as exc:
        raise _InvalidError("not_in_value_set") from exc


def _unique_list(f: Field, value: object, item: Callable[[object], str | None]) -> list[str]:
    if not isinstance(value, list | tuple):
        raise _InvalidError("invalid_type")
    if len(value) > f.max_items:
        raise _InvalidError("too_many_items")
    result: list[str] = []
    for checked in map(item, value):
        if checked is not None and checked not in result:
            result.append(checked)
    return result


def _date(value: object) -> date:
    if isinstance(value, datetime) or not isinstance(value, date | str):
        raise _InvalidError("invalid_type")
    if isinstance(value, str) and not _DATE.fullmatch(value):
        raise _InvalidError("invalid_format")
    try:
        result = date.fromisoformat(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise _InvalidError("invalid_date") from exc
    if not MIN_YEAR <= result.year <= MAX_YEAR:
        raise _InvalidError("out_of_range")
    return date(result.year, result.month, result.day)


def _datetime(value: object) -> datetime:
    if isinstance(value, str):
        match = _DATETIME.fullmatch(value)
        if match is None:
            raise _InvalidError("invalid_format")
        day, clock, offset = match.groups()
        if offset is None:
            raise _InvalidError("naive_datetime")
        offset = "+00:00" if offset in {"Z", "z"} else offset
        try:
            value = datetime.fromisoformat(f"{day}T{clock}{offset}")
        except ValueError as exc:
            raise _InvalidError("invalid_date") from exc
    if not isinstance(value, datetime):
        raise _InvalidError("invalid_type")
    if value.utcoffset() is None:
        raise _InvalidError("naive_datetime")
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise _InvalidError("out_of_range")
    return value.astimezone(UTC)


def _integer(value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _InvalidError("invalid_type")
    if not low <= value <= high:
        raise _InvalidError("out_of_range")
    return int(value)


def _pattern(value: object, pattern: re.Pattern[str]) -> str:
    text = _str(value)
    if not pattern.fullmatch(text):
        raise _InvalidError("invalid_format")
    return text


def _phone(value: object) -> str:
    raw = _str(value)
    if any(char.isalpha() for char in raw):  # no vanity letters, no "ext."
        raise _InvalidError("invalid_phone")
    try:
        number = phonenumbers.parse(raw, "CN")
    except phonenumbers.NumberParseException as exc:
        raise _InvalidError("invalid_phone") from exc
    if number.extension or not phonenumbers.is_valid_number(number):
        raise _InvalidError("invalid_phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _email(value: object, max_length: int = 254) -> str:
    try:
        result = validate_email(_str(value), check_deliverability=False)
    except EmailNotValidError as exc:
        raise _InvalidError("invalid_email") from exc
    address = result.normalized.lower()
    if len(address) > max_length:
        raise _InvalidError("too_long")
    return address


def _mod11_2(body: str) -> str:
    total = sum(int(digit) * weight for digit, weight in zip(body, _WEIGHTS, strict=True))
    return "0123456789X"[(12 - total % 11) % 11]


def _resident_id(value: object, today: date | None) -> tuple[str, date]:
    number = _str(value).strip()
    if not _RESIDENT_ID.fullmatch(number):
        raise _InvalidError("invalid_format")
    number = number.upper()
    if _mod11_2(number[:17]) != number[17]:
        raise _InvalidError("invalid_checksum")
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError as exc:
        raise _InvalidError("invalid_birth_date") from exc
    if born.year < MIN_YEAR or born > (today or date.today()):
        raise _InvalidError("invalid_birth_date")
    return number, born


def _document(id_type: IdType, value: object, today: date | None) -> tuple[str, date | None]:
    """The normalized number and, for a resident ID, its embedded birth date."""
    if id_type is IdType.resident_id:
        return _resident_id(value, today)
    number = _str(value).strip()
    if not number.isascii():  # upper() would turn "ß" into "SS"
        raise _InvalidError("invalid_format")
    number = number.upper()
    if not _DOCUMENTS[id_type].fullmatch(number):
        raise _InvalidError("invalid_format")
    new_fpr = id_type is IdType.foreign_permanent_resident and len(number) == 18
    if new_fpr and _mod11_2(number[:17]) != number[17]:
        raise _InvalidError("invalid_checksum")
    return number, None


_VALIDATORS: Final[Mapping[Kind, Callable[[Field, object], object]]] = {
    Kind.text: lambda f, v: _text(v, f.max_length),
    Kind.enum: lambda f, v: _enum(f.value_set, v),
    Kind.date: lambda _, v: _date(v),
    Kind.datetime: lambda _, v: _datetime(v),
    Kind.phone: lambda _, v: _phone(v),
    Kind.email: lambda f, v: _email(v, f.max_length),
    Kind.card_no: lambda _, v: _pattern(_str(v).strip(), _CARD_NO).upper(),
    Kind.clinic_id: lambda _, v: _pattern(v, _CLINIC_ID),
    Kind.staff_id: lambda _, v: _pattern(v, _STAFF_ID),
    Kind.text_list: lambda f, v: _unique_list(f, v, lambda i: _text(i, f.max_length)),
    Kind.enum_list: lambda f, v: _unique_list(f, v, lambda i: _enum(f.value_set, i)),
    Kind.money: lambda _, v: _integer(v, 0, MAX_MONEY),
    Kind.integer: lambda _, v: _integer(v, -MAX_INTEGER, MAX_INTEGER),
}


def normalize_phone(raw: str) -> str:
    """E.164 form of a valid phone number; a national number is read as Chinese."""
    return _single("phone", lambda: _phone(raw))


def normalize_email(raw: str) -> str:
    """Syntax-checked (no DNS) address, normalized, then lower-cased entirely."""
    return _single("email", lambda: _email(raw))


def parse_resident_id(raw: str, *, today: date | None = None) -> tuple[str, date]:
    """China's resident identity number (GB 11643-1999) → (number, birth date).

    17 digits and a check character (a digit or ``X``; ``x`` accepted, returned
    upper-case) by ISO 7064 MOD 11-2; characters 7–14 are the birth date
    YYYYMMDD: a real date, year ≥ 1900 and not after ``today`` (default: now).
    """
    return _single("national_id", lambda: _resident_id(raw, today))


def validate_document(id_type: IdType, raw: str, *, today: date | None = None) -> str:
    """The normalized (stripped, ASCII upper-case) number of an identity document.

    Accepted formats, by ``id_type``:

    * ``resident_id``: 18 characters, see :func:`parse_resident_id`;
    * ``passport``: 5–17 letters or digits;
    * ``hk_macau_permit``: ``H`` or ``M``, then 8 or 10 digits;
    * ``taiwan_permit``: 8 digits (older permit) or 8 or 10 letters/digits (card);
    * ``foreign_permanent_resident``: 3 letters and 12 digits (old card, 15
      characters), or ``9``, 16 digits and a MOD 11-2 check character as in a
      resident ID (new card, 18 characters).
    """
    try:
        kind = IdType(id_type)
    except ValueError:
        raise ValidationError({"id_type": "not_in_value_set"}) from None
    return _single("national_id", lambda: _document(kind, raw, today)[0])


def blind_index_normal_form(field: Field, value: str) -> str:
    """The idempotent normal form a blind-indexed field is indexed and searched by."""
    if not field.blind_indexed:
        raise ValueError(f"{field.qualified_name} is not blind-indexed")
    if field.kind is Kind.phone:
        return _single(field.name, lambda: _phone(value))
    if field.kind is Kind.email:
        return _single(field.name, lambda: _email(value, field.max_length))
    if field.kind in {Kind.document_number, Kind.card_no}:
        return value.strip().upper()
    raise ValueError(f"{field.qualified_name}: no blind-index normal form")


_UNKNOWN: Final = object()  # a related value that is itself invalid: no cross-check


def _check_document(
    f: Field,
    fields: Mapping[str, Field],
    problems: dict[str, str],
    *,
    values: Mapping[str, object],
    current: Mapping[str, object],
    out: dict[str, object],
    today: date | None,
) -> None:
    """Check a document number against the id type and birth date stored with it."""

    def after_write(name: str) -> object:
        if name in values:
            return out.get(name, _UNKNOWN)
        stored, related = current.get(name), fields.get(name)
        try:
            return None if stored is None or related is None else _VALIDATORS[related.kind](related, stored)
        except _InvalidError:
            return _UNKNOWN

    if f.name in problems or not {f.name, "id_type", "date_of_birth"} & values.keys():
        return
    raw = values[f.name] if f.name in values else current.get(f.name)
    id_type, born = after_write("id_type"), after_write("date_of_birth")
    if raw is None or id_type is _UNKNOWN:
        return
    if id_type is None:
        problems[f.name] = "id_type_required"
        return
    try:
        number, embedded = _document(IdType(str(id_type)), raw, today)
    except _InvalidError as exc:
        problems[f.name] = str(exc)
        return
    if f.name in values:
        out[f.name] = number
    if embedded is not None and isinstance(born, date) and born != embedded:
        problems[f.name] = "birth_date_mismatch"


def shown_name(name: object) -> str:
    """A caller's key as an error may name it: only if shaped like a field name (a made-up key could be a value)."""
    return name if isinstance(name, str) and _FIELD_NAME.fullmatch(name) else "<invalid name>"


def validate_values(
    table: Table,
    values: Mapping[str, object],
    *,
    partial: bool,
    current: Mapping[str, object] | None = None,
    today: date | None = None,
) -> dict[str, object]:
    """Validate and normalize the values of one create or merge-patch of ``table``.

    A create (``partial=False``) must give every required field, not None. A patch
    (``partial=True``) gives only the fields it changes; ``None`` clears a field
    that is not required. ``current`` (the stored values a patch applies to)
    supplies the id type and birth date a document number is checked against, and
    a patch of either re-checks the stored number; ``today`` (default: the current
    date) bounds the birth date in a resident ID. Returns the given fields
    normalized (blank optional text becomes ``None``).
    """
    fields = fields_by_name(table)
    problems: dict[str, str] = {}
    out: dict[str, object] = {}
    for name, raw in values.items():
        f = fields.get(name) if isinstance(name, str) else None
        if f is None:
            problems[shown_name(name)] = "unknown_field"
        elif raw is not None and f.kind is Kind.document_number:
            continue  # checked below, against id_type and date_of_birth
        else:
            try:
                value = None if raw is None else _VALIDATORS[f.kind](f, raw)
            except _InvalidError as exc:
                problems[name] = str(exc)
                continue
            if value is None and f.required:
                problems[name] = "required"
            else:
                out[name] = value
    for f in fields.values():
        if f.required and not partial and values.get(f.name) is None:
            problems.setdefault(f.name, "required")
        if f.kind is Kind.document_number:
            _check_document(f, fields, problems, values=values, current=current or {}, out=out, today=today)
    if problems:
        raise ValidationError(problems)
    return out


__all__ = [
    "blind_index_normal_form",
    "normalize_email",
    "normalize_phone",
    "parse_resident_id",
    "validate_document",
    "validate_values",
]
