"""Strict base64url and JSON decoding, shared by the token and key-set parsers.

Strict means: base64url without padding and in canonical form (no stray
trailing bits), UTF-8 only, no duplicate object members, no ``NaN`` or
``Infinity``. Every refusal is a ``ValueError`` whose message names at most a
member name, never a value.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import NoReturn

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded, canonical base64url (RFC 7515 §2)."""
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None
    if base64.urlsafe_b64encode(data).rstrip(b"=") != text.encode("ascii"):
        raise ValueError("not canonical base64url")
    return data


def strict_json(data: bytes) -> object:
    """Parse UTF-8 JSON, refusing duplicate members and the non-standard constants."""
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_members, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _unique_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    members: dict[str, object] = {}
    for name, value in pairs:
        if name in members:
            raise ValueError(f"duplicate member {name!r}")
        members[name] = value
    return members


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")
