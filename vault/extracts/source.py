"""The members an extract may hold, with the facts their profiles are built from — read in bulk, batch by batch.

``ProfileSource.batches`` walks the members in id order, ``batch`` at a time,
through one read connection, and yields only those eligible for the
consumer's purpose right now:

* not erased (tombstone) and with a live data key (a restored backup has no
  tombstone, but the shredded key is gone);
* not restricted (a completed restriction request);
* live consent for the purpose (``ConsentService.live_among``: the last event
  a grant, under a notice not superseded by a material one past its grace).

For each eligible member it decrypts only the member fields the requested
attributes read, and gathers from plain columns the treatment counts of the
last 12 months, the last visit and the categories, and from the ledger the
current balance (one decryption) and the 12 months' spend (one decryption
per ``spend`` entry). ``health`` says whether the member has live
``health_data`` consent (asked only when the consumer may receive
health-derived attributes). Per batch: a handful of queries and one key-store
read, never one per member.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, and_, case, func, select

from keys.errors import KeyNotFoundError
from keys.field_cipher import FieldCipher
from keys.member_keys import DATA_SCOPE, MemberKeys, MemberKeySet
from vault import data_map as dm
from vault.codec import open_sealed
from vault.consent import ConsentService
from vault.data_requests.model import RequestType, Status
from vault.extracts.profile import MemberFacts
from vault.purposes import Purpose
from vault.storage.schema import data_requests, ledger_entries, members, treatments

YEAR = timedelta(days=365)
_MEMBER = dm.fields_by_name(dm.Table.members)
_LEDGER = dm.fields_by_name(dm.Table.ledger_entries)


@dataclass(frozen=True, slots=True)
class SourceRow:
    member_id: str
    facts: MemberFacts
    health: bool  # live health_data consent


class ProfileSource:
    def __init__(self, keys: MemberKeys, consent: ConsentService, *, batch: int = 1000) -> None:
        self._keys = keys
        self._consent = consent
        self._batch = batch

    def batches(self, conn: Connection, purpose: Purpose, *, fields: Collection[str], want_health: bool, now: datetime) -> Iterator[list[SourceRow]]:
        """The eligible members in id order, a batch at a time (a batch may be empty when none of its members is eligible)."""
        wanted = [_MEMBER[name] for name in sorted(set(fields))]
        columns = [members.c.member_id, members.c.key_version, *(members.c[f.name] for f in wanted)]
        after = ""
        while True:
            rows = conn.execute(
                select(*columns).where(members.c.member_id > after, members.c.erased_at.is_(None)).order_by(members.c.member_id).limit(self._batch)
            ).all()
            if not rows:
                return
            after = str(rows[-1].member_id)
            yield self._batch_rows(conn, rows, wanted, purpose, want_health=want_health, now=now)

    def _batch_rows(
        self, conn: Connection, rows: Sequence[Row[Any]], wanted: list[dm.Field], purpose: Purpose, *, want_health: bool, now: datetime
    ) -> list[SourceRow]:
        ids = [str(r._mapping["member_id"]) for r in rows]
        eligible = self._consent.live_among(conn, ids, purpose, now) - _restricted(conn, ids)
        if not eligible:
            return []
        health = self._consent.live_among(conn, sorted(eligible), Purpose.health_data, now) if want_health else set()
        keys = self._keys.load_many(sorted(eligible), DATA_SCOPE)
        since = now - YEAR
        visits = _visits(conn, eligible, since)
        ledger = _ledger(conn, eligible, since)
        out = []
        for r in rows:
            m = r._mapping
            member_id = str(m["member_id"])
            keyset = keys.get(member_id)
            if member_id not in eligible or keyset is None:
                continue
            try:
                cipher = keyset.get(DATA_SCOPE, int(m["key_version"]))
            except KeyNotFoundError:
                continue  # shredded meanwhile
            values = {f.name: open_sealed(cipher, f, member_id, m[f.name]) if f.encrypted else m[f.name] for f in wanted}
            count, last, categories = visits.get(member_id, (0, None, {}))
            balance, spend = _money(keyset, ledger.get(member_id, _Money()))
            facts = MemberFacts(values=values, spend_12m=spend, balance=balance, visits_12m=count, last_visit=last, categories_12m=categories)
            out.append(SourceRow(member_id, facts, member_id in health))
        return out


def _restricted(conn: Connection, ids: list[str]) -> set[str]:
    d = data_requests.c
    stmt = select(d.member_id).where(d.member_id.in_(ids), d.type == RequestType.restriction.value, d.status == Status.completed.value)
    return {str(m) for m in conn.scalars(stmt)}


def _visits(conn: Connection, ids: Collection[str], since: datetime) -> dict[str, tuple[int, date | None, dict[str, int]]]:
    t = treatments.c
    recent = t.performed_at >= since
    totals = conn.execute(
        select(t.member_id, func.sum(case((recent, 1), else_=0)), func.max(t.performed_at)).where(t.member_id.in_(list(ids))).group_by(t.member_id)
    ).all()
    by_category: dict[str, dict[str, int]] = defaultdict(dict)
    for member_id, category, count in conn.execute(
        select(t.member_id, t.category, func.count()).where(t.member_id.in_(list(ids)), recent).group_by(t.member_id, t.category)
    ).all():
        by_category[str(member_id)][str(category)] = int(count)
    return {str(m): (int(n or 0), None if last is None else _day(last), by_category.get(str(m), {})) for m, n, last in totals}


def _day(moment: datetime) -> date:
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).astimezone(UTC).date()


@dataclass(slots=True)
class _Money:
    last: tuple[str, int, bytes] | None = None  # entry id, key version, sealed balance_after
    spends: list[tuple[str, int, bytes]] = field(default_factory=list)  # entry id, key version, sealed amount


def _ledger(conn: Connection, ids: Collection[str], since: datetime) -> dict[str, _Money]:
    e = ledger_entries.c
    wanted = list(ids)
    found: dict[str, _Money] = defaultdict(_Money)
    latest = select(e.member_id, func.max(e.seq).label("seq")).where(e.member_id.in_(wanted)).group_by(e.member_id).subquery()
    for member_id, entry_id, version, sealed in conn.execute(
        select(e.member_id, e.entry_id, e.key_version, e.balance_after).join(latest, and_(e.member_id == latest.c.member_id, e.seq == latest.c.seq))
    ).all():
        found[str(member_id)].last = (str(entry_id), int(version), bytes(sealed))
    for member_id, entry_id, version, sealed in conn.execute(
        select(e.member_id, e.entry_id, e.key_version, e.amount).where(e.member_id.in_(wanted), e.entry_type == "spend", e.occurred_at >= since)
    ).all():
        found[str(member_id)].spends.append((str(entry_id), int(version), bytes(sealed)))
    return found


def _money(keyset: MemberKeySet, money: _Money) -> tuple[int, int]:
    def amount(field: str, entry: tuple[str, int, bytes]) -> int:
        entry_id, version, sealed = entry
        cipher: FieldCipher = keyset.get(DATA_SCOPE, version)
        value = open_sealed(cipher, _LEDGER[field], entry_id, sealed)
        return value if isinstance(value, int) else 0

    balance = 0 if money.last is None else amount("balance_after", money.last)
    return balance, sum(amount("amount", s) for s in money.spends)


__all__ = ["ProfileSource", "SourceRow"]
