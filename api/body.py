"""Strict JSON request bodies: one parser, no differentials.

Leaf bytes in the audit log are canonical JSON of parsed values, so the
vault refuses JSON that two parsers could read differently or that costs
more than it should: not UTF-8, a duplicate key, a lone surrogate, NaN or
Infinity, an integer beyond ±2^53 (JSON numbers are exact only up to it), a
non-integral number where nothing needs one, or nesting deeper than
``MAX_DEPTH``. Each is ``BodyError`` with a reason code and never the
value. Size is capped by the HTTP layer before the body is read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53


class BodyError(Exception):
    """The body is not acceptable JSON; ``reason`` is a code."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"request body refused: {reason}")


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise BodyError("duplicate_key")
        out[key] = value
    return out


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > 16:  # beyond 2^53 anyway; and int() refuses numbers of more than 4,300 digits
        raise BodyError("integer_out_of_range")
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise BodyError("integer_out_of_range")
    return value


def _constant(_name: str) -> object:
    raise BodyError("non_finite_number")


def _float(_text: str) -> object:
    raise BodyError("non_integer_number")


def parse(raw: bytes) -> object:
    """Parse ``raw`` strictly; raise ``BodyError`` otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError("not_utf8") from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_int=_integer, parse_constant=_constant, parse_float=_float)
    except RecursionError:
        raise BodyError("too_deep") from None
    except json.JSONDecodeError:
        raise BodyError("malformed") from None
    _check(value, 0)
    return value


def _check(value: object, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BodyError("too_deep")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_text(key)
            _check(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check(item, depth + 1)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BodyError("lone_surrogate") from None


__all__ = ["MAX_DEPTH", "BodyError", "parse"]
