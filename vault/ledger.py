"""The prepaid card ledger: append-only entries with encrypted amounts and running balances.

Entry types (``LedgerEntryType``): ``top_up`` adds ``amount`` fen to the card,
``spend`` and ``refund`` take it off (a refund pays money back to the member),
``points_earn`` and ``points_redeem`` move ``points``. Every entry stores the
balances after it (encrypted), so the current balance is one decryption. The
type and time are plain; amounts and balances are encrypted under the member's
data key. Entries are numbered per member (``seq``, unique): two concurrent
writers cannot both append entry n, so a balance never forks. A spend, refund
or redemption beyond the balance is a ConflictError and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update

from keys.errors import KeyNotFoundError
from keys.field_cipher import FieldCipher
from keys.member_keys import DATA_SCOPE, MemberKeys
from vault import data_map as dm
from vault.codec import open_sealed, to_columns
from vault.errors import ConflictError, MemberErasedError, NotFoundError, ValidationError
from vault.ids import EntryId, new_id
from vault.storage.schema import ledger_entries, members
from vault.validation import validate_values
from vault.value_sets import LedgerEntryType as E

_FIELDS = dm.fields_of(dm.Table.ledger_entries)
_F = {f.name: f for f in _FIELDS}
_MONEY = {E.top_up: 1, E.spend: -1, E.refund: -1}
_POINTS = {E.points_earn: 1, E.points_redeem: -1}


@dataclass(frozen=True, slots=True)
class Balance:
    amount: int
    points: int
    seq: int


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    entry_id: EntryId
    seq: int
    values: dict[str, object]


class Ledger:
    def __init__(self, keys: MemberKeys, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._keys = keys
        self._now = now

    def append(self, conn: Connection, member_id: str, values: Mapping[str, object], *, entry_id: EntryId | None = None) -> LedgerEntry:
        given = {k: v for k, v in values.items() if k not in ("balance_after", "points_balance_after")}
        if len(given) != len(values):
            raise ValidationError({"balance_after": "read_only"})
        clean = validate_values(dm.Table.ledger_entries, {"occurred_at": self._now(), **given}, partial=False)
        kind = E(str(clean["entry_type"]))
        amount, points = int(_as_int(clean["amount"])), int(_as_int(clean.get("points") or 0))
        if kind in _MONEY and (amount <= 0 or points):
            raise ValidationError({"amount": "out_of_range"})
        if kind in _POINTS and (amount or points <= 0):
            raise ValidationError({"points": "out_of_range"})
        # Lock the member row so concurrent appends for one member serialize.
        conn.execute(update(members).where(members.c.member_id == member_id).values(updated_at=members.c.updated_at))
        cipher = self._cipher(conn, member_id)
        before = self._balance(conn, member_id, cipher)
        new_amount = before.amount + _MONEY.get(kind, 0) * amount
        new_points = before.points + _POINTS.get(kind, 0) * points
        if new_amount < 0 or new_points < 0:
            raise ConflictError("the card balance does not cover this entry")
        entry_id = EntryId(new_id()) if entry_id is None else entry_id
        clean |= {"points": points, "balance_after": new_amount, "points_balance_after": new_points}
        row = to_columns(cipher, _FIELDS, entry_id, clean)
        seq = before.seq + 1
        conn.execute(
            insert(ledger_entries).values(entry_id=entry_id, member_id=member_id, seq=seq, key_version=cipher.key_version, created_at=self._now(), **row)
        )
        return LedgerEntry(entry_id, seq, dict(clean))

    def balance(self, conn: Connection, member_id: str) -> Balance:
        return self._balance(conn, member_id, self._cipher(conn, member_id))

    def entries(self, conn: Connection, member_id: str, *, after_seq: int = 0, limit: int | None = None) -> list[LedgerEntry]:
        """The entries numbered above ``after_seq`` in order, at most ``limit`` of them."""
        cipher = self._cipher(conn, member_id)
        stmt = select(ledger_entries).where(ledger_entries.c.member_id == member_id, ledger_entries.c.seq > after_seq).order_by(ledger_entries.c.seq)
        rows = conn.execute(stmt if limit is None else stmt.limit(limit)).all()
        out = []
        for r in rows:
            m = r._mapping
            eid = str(m["entry_id"])
            values = {f.name: open_sealed(cipher, f, eid, m[f.name]) if f.encrypted else m[f.name] for f in _FIELDS}
            out.append(LedgerEntry(EntryId(eid), int(m["seq"]), values))
        return out

    def _balance(self, conn: Connection, member_id: str, cipher: FieldCipher) -> Balance:
        stmt = (
            select(ledger_entries.c.entry_id, ledger_entries.c.seq, ledger_entries.c.balance_after, ledger_entries.c.points_balance_after)
            .where(ledger_entries.c.member_id == member_id)
            .order_by(ledger_entries.c.seq.desc())
            .limit(1)
        )
        last = conn.execute(stmt).first()
        if last is None:
            return Balance(0, 0, 0)
        amount = open_sealed(cipher, _F["balance_after"], last.entry_id, last.balance_after)
        points = open_sealed(cipher, _F["points_balance_after"], last.entry_id, last.points_balance_after)
        return Balance(_as_int(amount), _as_int(points), int(last.seq))

    def _cipher(self, conn: Connection, member_id: str) -> FieldCipher:
        row = conn.execute(select(members.c.key_version, members.c.erased_at).where(members.c.member_id == member_id)).first()
        if row is None:
            raise NotFoundError(f"no member {member_id}")
        if row.erased_at is not None:
            raise MemberErasedError(f"member {member_id} was erased")
        try:
            return self._keys.load(member_id, scopes=(DATA_SCOPE,)).get(DATA_SCOPE, row.key_version)
        except KeyNotFoundError:
            raise MemberErasedError(f"member {member_id} has no live data key") from None


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("ledger amounts are integers")
    return value


__all__ = ["Balance", "Ledger", "LedgerEntry"]
