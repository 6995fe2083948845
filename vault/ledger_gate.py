"""The one way to a member's card ledger: decision checked, one audit event per call.

Routes reach the ledger only through ``LedgerGate``; both methods run through
``Gatekeeper.perform``:

* ``append`` writes only when ``financial`` is in ``access.writable``. The
  caller gives the entry type and its amount or points; the time and the
  balances after the entry are the ledger's own (given, they are refused).
  The member must exist (404) before the values are validated (422). A
  spend beyond the balance is a ``conflict`` and writes nothing.
* ``page`` decrypts only when ``financial`` is in ``access.readable`` and
  answers the entries after a sequence number, in order.

Events name the fields given and the categories read, never amounts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Connection

from vault import data_map as dm
from vault.access import Access, Gatekeeper, PendingRead, Refusal, Target, category_names
from vault.errors import NotFoundError, ValidationError
from vault.ids import EntryId, new_id
from vault.ledger import Ledger, LedgerEntry
from vault.members import MemberRepository

RESOURCE = "ledger_entry"
# Set by the ledger, never by a caller.
LEDGER_SET: tuple[str, ...] = ("occurred_at", "balance_after", "points_balance_after")
_FIELDS = dm.fields_by_name(dm.Table.ledger_entries)


@dataclass(frozen=True, slots=True)
class LedgerPage:
    """One page of a member's entries by ``seq``; ``more`` when later ones follow."""

    items: list[LedgerEntry]
    more: bool


class LedgerGate:
    def __init__(self, ledger: Ledger, members: MemberRepository, gatekeeper: Gatekeeper) -> None:
        self._ledger = ledger
        self._members = members
        self._gk = gatekeeper

    def append(self, conn: Connection, access: Access, member_id: str, values: Mapping[str, object]) -> LedgerEntry | Refusal:
        allowed = dm.Category.financial in access.writable
        entry_id = EntryId(new_id())
        target = Target("create", RESOURCE, entry_id, member_id, tuple(sorted(n for n in values if n in _FIELDS)))

        def append() -> LedgerEntry:
            if not self._members.exists(conn, member_id):
                raise NotFoundError(f"no member {member_id}")
            read_only = {name: "read_only" for name in LEDGER_SET if name in values}
            if read_only:
                raise ValidationError(read_only)
            return self._ledger.append(conn, member_id, values, entry_id=entry_id)

        return self._gk.perform(conn, access, target, allowed, append)

    def page(self, conn: Connection, access: Access, member_id: str, *, after_seq: int, limit: int) -> PendingRead[LedgerPage]:
        """Entries after ``after_seq``, at most ``limit``; the caller commits the event before it uses the page (``Gatekeeper.prepare_read``)."""
        allowed = dm.Category.financial in access.readable
        target = Target("list", RESOURCE, None, member_id, category_names(access.readable))

        def page() -> LedgerPage:
            later = self._ledger.entries(conn, member_id, after_seq=after_seq, limit=limit + 1)
            return LedgerPage(later[:limit], len(later) > limit)

        return self._gk.prepare_read(access, target, allowed, page)


__all__ = ["LEDGER_SET", "RESOURCE", "LedgerGate", "LedgerPage"]
