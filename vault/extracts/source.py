"""The members an extract may hold, with the facts their profiles are built from — read in bulk, batch by batch.

``ProfileSource.batches`` walks the members in id order (all of them, or the
ids in ``(after, until]``), ``batch`` at a time, through one read connection,
and yields only those eligible for the consumer's purpose right now
(``ProfileSource.rows`` yields the same members one at a time):

* not erased (tombstone) and with a live data key (a restored backup has no
  tombstone, but the shredded key is gone);
* not restricted (a completed restriction request);
* live consent for the purpose (``ConsentService.live_among_on_driver``,
  ``live_among``'s answer with its rows read on the SQLite driver: the last
  event a grant, under a notice not superseded by a material one past its
  grace).

For each eligible member it decrypts only the member fields the requested
attributes read, and gathers from plain columns the treatment counts of the
last 12 months, the last visit and the categories, and from the ledger the
current balance (one decryption) and the 12 months' spend (one decryption
per ``spend`` entry). ``health`` says whether the member has live
``health_data`` consent (asked only when the consumer may receive
health-derived attributes). Per batch: a handful of queries and one key-store
read, never one per member. A batch's members are named to the database as
one bound value (a JSON array read by SQLite's ``json_each``, an array for
PostgreSQL's ``= ANY``), so a statement compiles once per run, not once per
batch, and ciphertext columns are read as the driver's bytes.

``ProfileSource.spec`` and ``ProfileSource.reopen`` carry a source into another
process: the spec holds settings only (the consent grace period and the batch
size), never a key; the other process reopens the source over its own key
store and member repository.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from keys.errors import KeyNotFoundError
from keys.member_keys import DATA_SCOPE, MemberKeys, MemberKeySet
from vault import data_map as dm
from vault.codec import RowOpener
from vault.consent import ConsentService, Notice, NoticeBook
from vault.extracts._reads import BatchReads, batch_reads
from vault.extracts.profile import MemberFacts
from vault.members import MemberRepository
from vault.purposes import Purpose

YEAR = timedelta(days=365)
_MEMBER = dm.fields_by_name(dm.Table.members)
_LEDGER = dm.fields_by_name(dm.Table.ledger_entries)


@dataclass(frozen=True, slots=True)
class SourceRow:
    member_id: str
    facts: MemberFacts
    health: bool  # live health_data consent


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """What another process needs to reopen a ``ProfileSource``: settings, never a key."""

    grace: timedelta
    batch: int


class ProfileSource:
    def __init__(self, keys: MemberKeys, consent: ConsentService, *, batch: int = 1000) -> None:
        self._keys = keys
        self._consent = consent
        self._batch = batch

    def spec(self) -> SourceSpec:
        return SourceSpec(self._consent.grace, self._batch)

    @classmethod
    def reopen(cls, spec: SourceSpec, keys: MemberKeys, members: MemberRepository) -> ProfileSource:
        """The source ``spec`` describes, over another process's key store and member repository."""
        return cls(keys, ConsentService(members, NoticeBook(), grace=spec.grace), batch=spec.batch)

    def batches(
        self,
        conn: Connection,
        purpose: Purpose,
        *,
        fields: Collection[str],
        want_health: bool,
        now: datetime,
        after: str = "",
        until: str | None = None,
    ) -> Iterator[list[SourceRow]]:
        """The eligible members in id order, a batch at a time (a batch may be empty when none of its members is eligible).

        Only ids above ``after`` and, if given, up to ``until`` (inclusive) are read.
        """
        for batch in self._pages(conn, purpose, fields=fields, want_health=want_health, now=now, after=after, until=until):
            yield list(batch)

    def rows(
        self,
        conn: Connection,
        purpose: Purpose,
        *,
        fields: Collection[str],
        want_health: bool,
        now: datetime,
        after: str = "",
        until: str | None = None,
    ) -> Iterator[SourceRow]:
        """``batches``' members one at a time, each decrypted when it is asked for.

        The same reads, batch by batch; only a member's facts are not held
        with the rest of its batch, so a caller that profiles each member and
        drops its facts keeps a batch's worth fewer objects alive (objects the
        garbage collector would otherwise examine again and again).
        """
        for batch in self._pages(conn, purpose, fields=fields, want_health=want_health, now=now, after=after, until=until):
            yield from batch

    def _pages(
        self, conn: Connection, purpose: Purpose, *, fields: Collection[str], want_health: bool, now: datetime, after: str, until: str | None
    ) -> Iterator[Iterator[SourceRow]]:
        """Per page of ids, its eligible members (lazily: each page's iterator is to be exhausted before the next page is asked for)."""
        wanted = [_MEMBER[name] for name in sorted(set(fields))]
        reads, opener = batch_reads(conn, wanted), RowOpener(wanted)
        # The purposes' notices, read once for the walk (it runs in one transaction): not once per batch.
        notices = self._consent.notices.of(conn, purpose)
        health_notices = self._consent.notices.of(conn, Purpose.health_data) if want_health else None
        while True:
            ids = reads.page(after, until, self._batch)  # from the primary key's index alone: erased members are dropped with the rows of the eligible ones
            if not ids:
                return
            after = ids[-1]
            eligible = self._consent.live_among_on_driver(conn, ids, purpose, now, notices=notices) - reads.restricted(ids)
            if not eligible:
                yield iter(())
                continue
            rows = reads.members(sorted(eligible))
            yield self._batch_rows(conn, reads, rows, opener, [str(r[0]) for r in rows], health_notices=health_notices, now=now)

    def _batch_rows(
        self,
        conn: Connection,
        reads: BatchReads,
        rows: Sequence[Sequence[Any]],
        opener: RowOpener,
        chosen: list[str],
        *,
        health_notices: Sequence[Notice] | None,
        now: datetime,
    ) -> Iterator[SourceRow]:
        """The batch's members (``health_notices``: the ``health_data`` notices, when the members' health consent is wanted)."""
        health = set() if health_notices is None else self._consent.live_among_on_driver(conn, chosen, Purpose.health_data, now, notices=health_notices)
        keys = self._keys.load_many(chosen, DATA_SCOPE)
        since = now - YEAR
        visits = _visits(reads.visits(chosen, since))
        latest, spent = _ledger(reads.balances(chosen), reads.spends(chosen, since))
        nothing: tuple[int, date | None, dict[str, int]] = (0, None, {})
        no_spends: list[_Entry] = []
        names = [f.name for f in opener.fields]
        for r in rows:
            member_id, key_version, *sealed = r
            keyset = keys.get(member_id)
            if keyset is None:
                continue
            try:
                cipher = keyset.get(DATA_SCOPE, int(key_version))
            except KeyNotFoundError:
                continue  # shredded meanwhile
            values = dict(zip(names, opener.row(cipher, member_id, sealed), strict=True))
            count, last, categories = visits.get(member_id, nothing)
            balance, spend = _money(keyset, latest.get(member_id), spent.get(member_id, no_spends))
            facts = MemberFacts(values=values, spend_12m=spend, balance=balance, visits_12m=count, last_visit=last, categories_12m=categories)
            yield SourceRow(member_id, facts, member_id in health)


def _visits(rows: Iterable[Sequence[Any]]) -> dict[str, tuple[int, date | None, dict[str, int]]]:
    """Per member: treatments since the reads' moment, the last treatment's day, and the recent treatments by category.

    On SQLite a moment is stored as UTC text (``YYYY-MM-DD HH:MM:SS.ffffff``):
    the last treatment's day is read from its first ten characters rather than
    parsed into a datetime per row.
    """
    found: dict[str, tuple[int, date | None, dict[str, int]]] = {}
    for member_id, category, count, last in rows:
        total, latest, by_category = found.get(member_id, (0, None, {}))
        day = None if last is None else date.fromisoformat(last[:10]) if isinstance(last, str) else _day(last)
        if count:
            by_category[str(category)] = int(count)
        found[member_id] = (total + int(count or 0), day if latest is None or (day is not None and day > latest) else latest, by_category)
    return found


def _day(moment: datetime) -> date:
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).astimezone(UTC).date()


_Entry = tuple[str, int, bytes]  # a ledger entry's id, key version and sealed value


def _ledger(balances: Iterable[Sequence[Any]], spends: Iterable[Sequence[Any]]) -> tuple[dict[str, _Entry], dict[str, list[_Entry]]]:
    """Per member: the latest entry (its sealed ``balance_after``), and the ``spend`` entries (their sealed ``amount``).

    Plain tuples in plain dicts: a small object per member (and a list per
    member who spent) held for its batch is one more for the garbage
    collector to examine while the batch is profiled.
    """
    latest = {member_id: (entry_id, version, sealed) for member_id, entry_id, version, sealed in balances}
    spent: dict[str, list[_Entry]] = {}
    for member_id, entry_id, version, sealed in spends:
        entries = spent.get(member_id)
        if entries is None:
            spent[member_id] = [(entry_id, version, sealed)]
        else:
            entries.append((entry_id, version, sealed))
    return latest, spent


_BALANCE, _AMOUNT = RowOpener([_LEDGER["balance_after"]]), RowOpener([_LEDGER["amount"]])


def _money(keyset: MemberKeySet, last: _Entry | None, spends: Sequence[_Entry]) -> tuple[int, int]:
    balance = 0 if last is None else _amount(keyset, _BALANCE, last)
    spend = 0
    for entry in spends:
        spend += _amount(keyset, _AMOUNT, entry)
    return balance, spend


def _amount(keyset: MemberKeySet, opener: RowOpener, entry: tuple[str, int, bytes]) -> int:
    entry_id, version, sealed = entry
    value = opener.row(keyset.get(DATA_SCOPE, version), entry_id, (sealed,))[0]
    return value if isinstance(value, int) else 0


__all__ = ["ProfileSource", "SourceRow", "SourceSpec"]
