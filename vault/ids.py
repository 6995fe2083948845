"""Opaque identifiers: 128 random bits, hex; never derived from personal data."""

from __future__ import annotations

import secrets
from typing import NewType

MemberId = NewType("MemberId", str)
TreatmentId = NewType("TreatmentId", str)
EntryId = NewType("EntryId", str)


def new_id() -> str:
    return secrets.token_hex(16)


__all__ = ["EntryId", "MemberId", "TreatmentId", "new_id"]
