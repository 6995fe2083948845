"""The purpose catalog: why a caller reaches personal data, and on what legal ground.

One list for policies, consent, extracts and audit. Each purpose has a legal
basis (PIPL Art. 13), says whether it needs the member's consent and whether
it concerns sensitive personal information (PIPL Art. 28). Notice texts and
their versions live in the database (``vault.consent.notices``); this module
holds what never changes without a code review.

``health_data`` is a consent (PIPL Art. 29: the separate consent that gates
writing the health category and releasing anything health-derived), not a
purpose a caller states in ``X-Purpose``; ``statable()`` leaves it out.
``needs_consent`` marks the purposes that count only while the member's live
consent covers them.
"""

from __future__ import annotations

from enum import StrEnum


class LegalBasis(StrEnum):
    contract = "contract"  # PIPL Art. 13(2): necessary to perform the card and treatment contract
    consent = "consent"  # PIPL Art. 13(1), with separate consent for sensitive data (Art. 29)
    legal_obligation = "legal_obligation"  # PIPL Art. 13(3): retention rules, legal claims


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
    def legal_basis(self) -> LegalBasis:
        return _BASIS.get(self, LegalBasis.consent)

    @property
    def needs_consent(self) -> bool:
        return self.legal_basis is LegalBasis.consent

    @property
    def sensitive(self) -> bool:
        """The purpose concerns sensitive personal information (health data, photos of the body, data leaving the country)."""
        return self in _SENSITIVE

    @property
    def statable(self) -> bool:
        return self is not Purpose.health_data


_BASIS = {
    Purpose.care: LegalBasis.contract,
    Purpose.self_service: LegalBasis.contract,
    Purpose.legal_claims: LegalBasis.legal_obligation,
}
_SENSITIVE = frozenset({Purpose.care, Purpose.health_data, Purpose.photo_use, Purpose.cross_border_transfer, Purpose.legal_claims})


def statable() -> tuple[Purpose, ...]:
    """The purposes a caller may name in ``X-Purpose``."""
    return tuple(p for p in Purpose if p.statable)


def consent_purposes() -> tuple[Purpose, ...]:
    """The purposes a member grants or withdraws consent for."""
    return tuple(p for p in Purpose if p.needs_consent)


__all__ = ["LegalBasis", "Purpose", "consent_purposes", "statable"]
