"""The purpose catalog's identifiers: why a caller reaches personal data.

One list for policies, consent, extracts and audit. ``health_data`` is a
consent (PIPL Art. 29: the separate consent that gates the health category),
not a purpose a caller states in ``X-Purpose``; ``statable()`` leaves it out.
``needs_consent`` marks the purposes that count only while the member's live
consent covers them.
"""

from __future__ import annotations

from enum import StrEnum


class Purpose(StrEnum):
    care = "care"
    health_data = "health_data"
    marketing_contact = "marketing_contact"
    loyalty_profiling = "loyalty_profiling"
    third_party_sharing = "third_party_sharing"
    photo_use = "photo_use"
    cross_border_transfer = "cross_border_transfer"
    self_service = "self_service"
    legal_claims = "legal_claims"

    @property
    def needs_consent(self) -> bool:
        return self in _CONSENT

    @property
    def statable(self) -> bool:
        return self is not Purpose.health_data


_CONSENT = frozenset(
    {
        Purpose.health_data,
        Purpose.marketing_contact,
        Purpose.loyalty_profiling,
        Purpose.third_party_sharing,
        Purpose.photo_use,
        Purpose.cross_border_transfer,
    }
)


def statable() -> tuple[Purpose, ...]:
    """The purposes a caller may name in ``X-Purpose``."""
    return tuple(p for p in Purpose if p.statable)


__all__ = ["Purpose", "statable"]
