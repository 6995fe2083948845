"""The one timestamp format of the audit log: RFC 3339, UTC, whole seconds, ``Z``.

Exactly ``YYYY-MM-DDTHH:MM:SSZ`` (20 ASCII characters), e.g.
``2026-11-22T16:00:00Z``. No fractions, no offsets other than ``Z``, no lower
case: one instant has one spelling, so the canonical bytes of an event and the
text of a checkpoint are stable.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache

_PATTERN = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")


def format_utc(moment: datetime) -> str:
    """Spell an aware datetime in the log's format, dropping fractions of a second."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("a naive datetime has no defined instant; pass an aware one")
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"


@lru_cache(maxsize=256)  # events of one second share their time: a busy log parses each once
def parse_utc(text: str) -> datetime:
    """Read the log's format back into an aware UTC datetime; ``ValueError`` if it is not exactly that."""
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise ValueError("not an RFC 3339 UTC time with whole seconds and Z")
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)  # checks the ranges; no leap second


def is_utc_seconds(text: str) -> bool:
    try:
        parse_utc(text)
    except ValueError:
        return False
    return True
