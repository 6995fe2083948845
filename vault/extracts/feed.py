"""The deletion feed: the pseudonyms each consumer must delete downstream.

When a member leaves the extracts — withdraws consent for a consumer's
purpose, is erased, or is restricted — ``member_left`` adds, in the same
transaction as that event, one entry per (consumer, epoch) whose extracts held
the member (``extract_members``): the member's pseudonym for that consumer and
epoch, and why. A consent that turns stale has no event of its own: the
sweep of ``vault.extracts.stale`` feeds those members (reason ``stale``) once
per stale moment, in bulk for each (consumer, epoch), through ``members_left``.
The next extract leaves the member out anyway (eligibility is
decided afresh on every run); the feed tells the consumer to drop what it
already has. Entries are append-only and numbered; a consumer reads its own
from a cursor (``since``).

Invariants:

* A pseudonym is fed when the consumer holds it: when it has no entry yet for
  the (consumer, epoch), or when a done extract of that epoch released it after
  its last entry. Each done extract records the feed's last ``seq`` when it
  was released (``extracts.feed_seq``); an extract whose ``feed_seq`` is at
  least the last entry's ``seq`` came after that entry. So a member who
  withdraws, grants again, is released again and withdraws again is fed
  twice, and one who withdraws twice with no release in between once.
* A member who leaves while an extract for that purpose runs is recorded
  against it (``extract_departures``): the extract's snapshots may predate the
  departure. The extract, when released, feeds those of them it included
  (``departed``), after its ``feed_seq``.
* Every writer of the feed, and ``ExtractRunner.begin`` and its final
  transaction, hold the feed's lock (``hold``) until they commit: SQLite's
  write lock (their transactions begin ``IMMEDIATE``), on PostgreSQL a
  transaction-scoped advisory lock. So of a departure and an extract's start
  or release, whichever commits second sees the other: the departure finds
  the extract running (and records itself against it) or done (and feeds
  the members it holds), or else it committed before the extract began and
  the extract's snapshots see it. Entries are also numbered in commit
  order, and two writers feeding one member cannot both add it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, func, insert, select

from vault.extracts.pseudonyms import Pseudonymizer
from vault.purposes import Purpose
from vault.storage.among import among
from vault.storage.schema import deletion_feed, extract_departures, extract_members, extracts

FEED_LOCK_KEY = 8856139210734855352
"""The PostgreSQL advisory lock key: the first 8 bytes of SHA-256("member-vault deletion feed"), signed."""


class LeftReason(StrEnum):
    withdrawn = "withdrawn"
    erased = "erased"
    restricted = "restricted"
    stale = "stale"  # granted under a notice a material version replaced, past its grace period
    suppressed = "suppressed"  # an extract of the epoch released the member; a later one suppressed the member's class


@dataclass(frozen=True, slots=True)
class FeedEntry:
    seq: int
    epoch: int
    pseudonym: str
    reason: LeftReason
    at: datetime


def hold(conn: Connection) -> None:
    """Take the feed's lock until the caller's transaction ends (SQLite: its write transaction holds the write lock already)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(FEED_LOCK_KEY)))


def last_seq(conn: Connection) -> int:
    """The feed's last ``seq`` (0 when empty), under ``hold``: what a released extract records as its ``feed_seq``."""
    return int(conn.execute(select(func.coalesce(func.max(deletion_feed.c.seq), 0))).scalar_one())


class DeletionFeed:
    def __init__(self, pseudonym_root: Callable[[], bytes]) -> None:
        self._root_of = pseudonym_root
        self._root: bytes | None = None

    def _pseudonymizer(self, consumer_id: str, epoch: int) -> Pseudonymizer:
        if self._root is None:
            self._root = self._root_of()
        return Pseudonymizer(self._root, consumer_id, epoch)

    def member_left(self, conn: Connection, member_id: str, reason: LeftReason, *, purposes: Collection[Purpose] | None, now: datetime) -> int:
        """Feed the member's pseudonyms to every consumer (of ``purposes``, or all) that received them; the number of entries added.

        The member is also recorded against every running extract of those purposes (``departed`` feeds them when it is released).
        """
        hold(conn)
        e = extracts.c
        held = select(e.consumer_id, e.epoch).join(extract_members, extract_members.c.extract_id == e.extract_id)
        held = held.where(extract_members.c.member_id == member_id, e.status == "done")
        running = select(e.extract_id).where(e.status == "running")
        if purposes is not None:
            held = held.where(e.purpose.in_([p.value for p in purposes]))
            running = running.where(e.purpose.in_([p.value for p in purposes]))
        d = extract_departures.c
        for extract_id in [str(i) for i in conn.scalars(running)]:
            if conn.execute(select(d.reason).where(d.extract_id == extract_id, d.member_id == member_id)).first() is None:
                conn.execute(insert(extract_departures).values(extract_id=extract_id, member_id=member_id, reason=reason.value, at=now))
        return sum(
            self.members_left(conn, consumer_id, epoch, (member_id,), reason, now=now)
            for consumer_id, epoch in sorted({(str(c), int(n)) for c, n in conn.execute(held.distinct())})
        )

    def members_left(self, conn: Connection, consumer_id: str, epoch: int, member_ids: Sequence[str], reason: LeftReason, *, now: datetime) -> int:
        """Feed the pseudonyms of ``member_ids`` the consumer holds for ``epoch`` (see the module's invariants); the number of entries added."""
        hold(conn)
        pseudonymize = self._pseudonymizer(consumer_id, epoch)
        member_of = {pseudonymize(m): m for m in member_ids}
        if not member_of:
            return 0
        f = deletion_feed.c
        last_entries = select(f.pseudonym, func.max(f.seq)).where(
            f.consumer_id == consumer_id, f.epoch == epoch, among(conn.dialect, f.pseudonym, sorted(member_of))
        )
        last = {str(p): int(seq) for p, seq in conn.execute(last_entries.group_by(f.pseudonym))}
        again = _released_after(conn, consumer_id, epoch, {member_of[p]: seq for p, seq in last.items()})
        rows = [
            {"consumer_id": consumer_id, "epoch": epoch, "pseudonym": p, "reason": reason.value, "at": now}
            for p in sorted(member_of)
            if p not in last or member_of[p] in again
        ]
        if rows:
            conn.execute(insert(deletion_feed), rows)
        return len(rows)

    def departed(self, conn: Connection, extract_id: str, *, now: datetime) -> int:
        """Feed the members recorded against ``extract_id`` as departed whom it included; called as the extract is released, after ``done``."""
        d, m = extract_departures.c, extract_members.c
        included = select(d.member_id, d.reason).join(extract_members, (m.extract_id == d.extract_id) & (m.member_id == d.member_id))
        by_reason: dict[LeftReason, list[str]] = {}
        for member_id, reason in conn.execute(included.where(d.extract_id == extract_id).order_by(d.member_id)):
            by_reason.setdefault(LeftReason(reason), []).append(str(member_id))
        if not by_reason:
            return 0
        consumer_id, epoch = conn.execute(select(extracts.c.consumer_id, extracts.c.epoch).where(extracts.c.extract_id == extract_id)).one()
        return sum(self.members_left(conn, str(consumer_id), int(epoch), ids, reason, now=now) for reason, ids in sorted(by_reason.items()))

    def since(self, conn: Connection, consumer_id: str, *, after: int, limit: int) -> list[FeedEntry]:
        f = deletion_feed.c
        rows = conn.execute(select(f.seq, f.epoch, f.pseudonym, f.reason, f.at).where(f.consumer_id == consumer_id, f.seq > after).order_by(f.seq).limit(limit))
        return [FeedEntry(int(r.seq), int(r.epoch), str(r.pseudonym), LeftReason(r.reason), r.at) for r in rows]


def _released_after(conn: Connection, consumer_id: str, epoch: int, last_entry: dict[str, int]) -> set[str]:
    """Which of the members (each with its last entry's ``seq``) a done extract of the epoch released after that entry.

    The epoch's done extracts recorded since the earliest of those entries,
    each looked up by its primary key ``(extract_id, member_id)``.
    """
    if not last_entry:
        return set()
    e, m = extracts.c, extract_members.c
    later = select(e.extract_id, e.feed_seq).where(e.consumer_id == consumer_id, e.epoch == epoch, e.status == "done", e.feed_seq >= min(last_entry.values()))
    found: set[str] = set()
    for extract_id, feed_seq in conn.execute(later).all():
        candidates = sorted(i for i, seq in last_entry.items() if seq <= feed_seq and i not in found)
        if candidates:
            held = select(m.member_id).where(m.extract_id == extract_id, among(conn.dialect, m.member_id, candidates))
            found.update(str(i) for i in conn.scalars(held))
    return found


__all__ = ["FEED_LOCK_KEY", "DeletionFeed", "FeedEntry", "LeftReason", "hold", "last_seq"]
