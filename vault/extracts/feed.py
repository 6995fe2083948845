"""The deletion feed: the pseudonyms each consumer must delete downstream.

When a member leaves the extracts — withdraws consent for a consumer's
purpose, is erased, or is restricted — ``member_left`` adds, in the same
transaction as that event, one entry per (consumer, epoch) whose extracts held
the member (``extract_members``): the member's pseudonym for that consumer and
epoch, and why. The next extract leaves the member out anyway (eligibility is
decided afresh on every run); the feed tells the consumer to drop what it
already has. Entries are append-only and numbered; a consumer reads its own
from a cursor (``since``). A pseudonym already in the feed is not added twice.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, and_, insert, select

from vault.extracts.pseudonyms import Pseudonymizer
from vault.purposes import Purpose
from vault.storage.schema import deletion_feed, extract_members, extracts


class LeftReason(StrEnum):
    withdrawn = "withdrawn"
    erased = "erased"
    restricted = "restricted"


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
        added = 0
        for consumer_id, epoch in sorted({(str(c), int(e)) for c, e in conn.execute(held.distinct())}):
            pseudonym = self._pseudonymizer(consumer_id, epoch)(member_id)
            f = deletion_feed.c
            listed = conn.execute(select(f.seq).where(and_(f.consumer_id == consumer_id, f.epoch == epoch, f.pseudonym == pseudonym))).first()
            if listed is None:
                conn.execute(insert(deletion_feed).values(consumer_id=consumer_id, epoch=epoch, pseudonym=pseudonym, reason=reason.value, at=now))
                added += 1
        return added

    def since(self, conn: Connection, consumer_id: str, *, after: int, limit: int) -> list[FeedEntry]:
        f = deletion_feed.c
        rows = conn.execute(select(f.seq, f.epoch, f.pseudonym, f.reason, f.at).where(f.consumer_id == consumer_id, f.seq > after).order_by(f.seq).limit(limit))
        return [FeedEntry(int(r.seq), int(r.epoch), str(r.pseudonym), LeftReason(r.reason), r.at) for r in rows]


__all__ = ["DeletionFeed", "FeedEntry", "LeftReason"]
