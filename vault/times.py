"""The spellings of an instant: RFC 3339, UTC, ``Z``.

``rfc3339_seconds`` is what the vault signs or hashes (notice hashes, consent
receipts, FHIR resources, erasure certificates, manifests): whole seconds, so
one instant has one spelling (``2026-11-22T16:00:00Z``). ``json_value`` is
how a stored date or time is shown in JSON — API answers and export archives
alike — keeping any fraction of a second.
"""

from __future__ import annotations

from datetime import UTC, date, datetime


def rfc3339_seconds(moment: datetime) -> str:
    """An aware datetime in UTC, fractions of a second dropped; ``ValueError`` for a naive one."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no defined instant; pass an aware one")
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def json_value(value: object) -> str:
    """A date (ISO 8601) or an aware datetime (RFC 3339, UTC, ``Z``) as JSON shows it; ``TypeError`` for anything else."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


__all__ = ["json_value", "rfc3339_seconds"]
