"""The question access control asks the consent service: does this member's live consent cover this purpose?

``ConsentCheck`` is the interface; the consent service (append-only grant
and withdrawal history) implements it. Until it exists, ``NoConsentRecords``
answers no for every member and purpose, so every purpose that needs consent
is refused (default deny) rather than allowed without proof.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Connection

from vault.purposes import Purpose


class ConsentCheck(Protocol):
    def has_live_consent(self, conn: Connection, member_id: str, purpose: Purpose) -> bool: ...


class NoConsentRecords:
    """No consent is recorded anywhere yet: nothing that needs consent is allowed."""

    def has_live_consent(self, conn: Connection, member_id: str, purpose: Purpose) -> bool:
        return False


__all__ = ["ConsentCheck", "NoConsentRecords"]
