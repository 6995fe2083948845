"""The question access control asks the consent service: does this member's live consent cover this purpose at ``now``?

``ConsentCheck`` is the interface the edge depends on; ``vault.consent.ConsentService``
implements it by deriving the state from the append-only history on every
call, so no process ever answers from a stale copy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection

from vault.purposes import Purpose


class ConsentCheck(Protocol):
    def has_live_consent(self, conn: Connection, member_id: str, purpose: Purpose, now: datetime) -> bool: ...


__all__ = ["ConsentCheck"]
