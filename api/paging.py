"""Paging of lists: ``?cursor=&limit=`` answers ``{"items": [...], "next_cursor": … | null}``.

A cursor is opaque to the caller: base64url (no padding) of the position of
the last item of the previous page (an id or a sequence number). Anything
this API did not hand out is a 400; a limit beyond ``MAX_LIMIT`` is capped.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated

from fastapi import Query

from api.problems import BAD_REQUEST, ProblemError

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
ID_PATTERN = re.compile(r"[0-9a-f]{32}")

CursorQuery = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]*$", description="opaque: the next_cursor of the previous page")]
LimitQuery = Annotated[int, Query(ge=1, description=f"items per page (at most {MAX_LIMIT}; more is capped)")]


def capped(limit: int) -> int:
    return min(limit, MAX_LIMIT)


def encode_cursor(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode("ascii")).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str | None, position: re.Pattern[str]) -> str | None:
    """The position a cursor names (None for the first page); 400 for anything this API did not hand out."""
    if cursor is None:
        return None
    try:
        decoded = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, ValueError):  # ValueError: not ASCII (UnicodeDecodeError is one too)
        decoded = ""
    if not position.fullmatch(decoded) or encode_cursor(decoded) != cursor:
        raise ProblemError(BAD_REQUEST, "the cursor is not one this list handed out")
    return decoded


__all__ = ["DEFAULT_LIMIT", "ID_PATTERN", "MAX_LIMIT", "CursorQuery", "LimitQuery", "capped", "decode_cursor", "encode_cursor"]
