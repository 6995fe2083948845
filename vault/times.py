"""The one spelling of an instant in what the vault signs or hashes: RFC 3339, UTC, whole seconds, ``Z``.

Notice hashes, consent receipts, FHIR resources and erasure certificates all
use it, so one instant has one spelling (``2026-11-22T16:00:00Z``).
"""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339_seconds(moment: datetime) -> str:
    """An aware datetime in UTC, fractions of a second dropped; ``ValueError`` for a naive one."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no defined instant; pass an aware one")
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


__all__ = ["rfc3339_seconds"]
