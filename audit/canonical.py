"""Canonical JSON (RFC 8785) for the audit log's subset of JSON.

The leaf bytes of the audit tree are ``canonical_bytes(event.to_json_obj())``.
The subset, checked before anything is written:

- ``None``, ``bool``, ``str``, ``int`` with |x| ≤ 2^53 − 1 (the I-JSON safe
  integers, the range RFC 8785's reference implementations accept), ``list``
  and ``dict`` of those, nested at most ``MAX_DEPTH`` deep;
- no ``float`` at all (RFC 8785's number formatting is the part the standard
  library does not reproduce), no tuples, sets or other types;
- object keys are ``str`` and ASCII: for ASCII keys Python's code-point sort
  equals RFC 8785's sort by UTF-16 code units;
- strings hold no lone surrogates (they have no UTF-8 form).

For that subset RFC 8785 output is exactly::

    json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

(integers in decimal, strings with the same escapes — ``\\b \\t \\n \\f \\r
\\" \\\\`` and ``\\u00xx`` in lower-case hex for the other control characters —
and everything else as raw UTF-8). ``tests/audit/test_canonical.py`` proves the
equality against the ``rfc8785`` package. A dict has no duplicate keys, so the
output never has any.
"""

from __future__ import annotations

import json
from typing import TypeAlias

from audit.errors import CanonicalJsonError

JsonValue: TypeAlias = "bool | int | str | list[JsonValue] | dict[str, JsonValue] | None"
"""The JSON values this module writes (``float`` excluded by design)."""

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 32


# One encoder for every call (``json.dumps`` with options builds a new one each time).
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_bytes(obj: object) -> bytes:
    """The RFC 8785 bytes of ``obj``; ``CanonicalJsonError`` if ``obj`` is outside the subset."""
    _check(obj, 0)
    text = _ENCODER.encode(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalJsonError("a string holds a lone surrogate") from None


def canonical_bytes_of_checked(obj: object) -> bytes:
    """``canonical_bytes`` for a value its constructor already confined to the subset (an ``AuditEvent``'s JSON).

    Skips the walk over the value; the caller vouches for every rule above.
    ``tests/audit/test_canonical.py`` checks events' leaf bytes against ``rfc8785``.
    """
    return _ENCODER.encode(obj).encode("utf-8")


def _check(obj: object, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CanonicalJsonError(f"nested deeper than {MAX_DEPTH}")
    if obj is None or isinstance(obj, bool):
        return
    if isinstance(obj, int):
        if not -MAX_SAFE_INTEGER <= obj <= MAX_SAFE_INTEGER:
            raise CanonicalJsonError("integer outside ±(2^53 − 1)")
        return
    if isinstance(obj, float):
        raise CanonicalJsonError("floats are not allowed")
    if isinstance(obj, str):
        return
    if isinstance(obj, list):
        for item in obj:
            _check(item, depth + 1)
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise CanonicalJsonError("object keys must be strings")
            if not key.isascii():
                raise CanonicalJsonError("object keys must be ASCII")
            _check(value, depth + 1)
        return
    raise CanonicalJsonError(f"type {type(obj).__name__} is not allowed")


__all__ = ["MAX_DEPTH", "MAX_SAFE_INTEGER", "JsonValue", "canonical_bytes", "canonical_bytes_of_checked"]
