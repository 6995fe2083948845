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
from a cursor (``since``). A pseudonym already in the feed is not added twice:
it is looked up first, and on PostgreSQL, where two transactions may add the
same pseudonym at once (SQLite has one writer), the later one's insert does
nothing (``ON CONFLICT DO NOTHING``) instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, Insert, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from vault.extracts.pseudonyms import Pseudonymizer
from vault.purposes import Purpose
from vault.storage.among import among
from vault.storage.schema import deletion_feed, extract_members, extracts


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


class DeletionFeed:
    def __init__(self, pseudonym_root: Callable[[], bytes]) -> None:
        self._root_of = pseudonym_root
        self._root: bytes | None = None

    def _pseudonymizer(self, consumer_id: str, epoch: int) -> Pseudonymizer:
        if self._root is None:
            self._root = self._root_of()
        return Pseudonymizer(self._root, consumer_id, epoch)

    def member_left(self, conn: Connection, member_id: str, reason: LeftReason, *, purposes: Collection[Purpose] | None, now: datetime) -> int:
        """Feed the member's pseudonyms to every consumer (of ``purposes``, or all) that received them; the number of entries added."""
        held = select(extracts.c.consumer_id, extracts.c.epoch).join(extract_members, extract_members.c.extract_id == extracts.c.extract_id)
        held = held.where(extract_members.c.member_id == member_id, extracts.c.status == "done")
        if purposes is not None:
            held = held.where(extracts.c.purpose.in_([p.value for p in purposes]))
        return sum(
            self.members_left(conn, consumer_id, epoch, (member_id,), reason, now=now)
            for consumer_id, epoch in sorted({(str(c), int(e)) for c, e in conn.execute(held.distinct())})
        )

    def members_left(self, conn: Connection, consumer_id: str, epoch: int, member_ids: Sequence[str], reason: LeftReason, *, now: datetime) -> int:
        """Feed the pseudonyms of ``member_ids`` for one (consumer, epoch), each once; the number of entries added."""
        pseudonymize = self._pseudonymizer(consumer_id, epoch)
        pseudonyms = sorted({pseudonymize(m) for m in member_ids})
        if not pseudonyms:
            return 0
        f = deletion_feed.c
        listed = set(conn.scalars(select(f.pseudonym).where(f.consumer_id == consumer_id, f.epoch == epoch, among(conn.dialect, f.pseudonym, pseudonyms))))
        rows = [{"consumer_id": consumer_id, "epoch": epoch, "pseudonym": p, "reason": reason.value, "at": now} for p in pseudonyms if p not in listed]
        if not rows:
            return 0
        return len(conn.execute(_insert(conn).returning(f.seq), rows).all())

    def since(self, conn: Connection, consumer_id: str, *, after: int, limit: int) -> list[FeedEntry]:
        f = deletion_feed.c
        rows = conn.execute(select(f.seq, f.epoch, f.pseudonym, f.reason, f.at).where(f.consumer_id == consumer_id, f.seq > after).order_by(f.seq).limit(limit))
        return [FeedEntry(int(r.seq), int(r.epoch), str(r.pseudonym), LeftReason(r.reason), r.at) for r in rows]


def _insert(conn: Connection) -> Insert:
    if conn.dialect.name == "postgresql":
        return pg_insert(deletion_feed).on_conflict_do_nothing(index_elements=["consumer_id", "epoch", "pseudonym"])
    return insert(deletion_feed)


__all__ = ["DeletionFeed", "FeedEntry", "LeftReason"]
