"""Stale consent reaches the deletion feed: each stale moment swept in short transactions, and recorded once done.

A withdrawal, an erasure or a restriction is an event, and feeds the member's
pseudonyms in its own transaction (``vault.extracts.feed``). A consent that
turns stale is not: a *material* notice version *v* of purpose *p* makes
every grant under an earlier version stop counting at ``effective_at(v)`` plus
the grace period (``vault.consent.state.stale_from`` of the version before
*v*). That instant, with (*p*, *v*), is a *stale moment*.

Invariants:

* For each (consumer, epoch) of the done extracts of *p*, the members those
  extracts held (``extract_members``) whose consent for *p* is not live at the
  sweep's ``now`` — decided by ``ConsentService.live_among_on_driver``, the
  rule every other gate uses — are fed with reason ``stale``
  (``DeletionFeed.members_left``: the consumer's pseudonym for that epoch,
  unless its last entry came after every extract of the epoch that released
  it). A member who granted
  again under the new notice before the sweep is live and is not fed.
* The held members are judged ``BATCH`` at a time in member-id order, each
  batch in its own write transaction: memory stays bounded by a batch, and
  the SQLite write lock is held for one batch, never for the whole moment (a
  million-member vault would otherwise keep every API writer waiting past its
  busy timeout).
* A moment is swept to the end once, across processes and restarts: when
  every batch is done, its row goes into ``deletion_feed_sweeps``
  (append-only); a moment with a row is not due, and a batch transaction that
  finds the row stops. A sweep interrupted midway (the process stopped)
  leaves no row, and the next one goes over the moment again: what was fed is
  not fed twice. Two processes sweeping the same moment at once feed each
  pseudonym once (the feed's writers hold its lock: ``vault.extracts.feed``),
  and the second to finish finds the row written: no sweep fails for it.
* A moment waits while an extract of its purpose started before it is still
  running: that extract judged consent before the moment and records its
  members only when it ends. (One the heartbeat sweep marks interrupted
  holds no members.)
* Nothing is decrypted (consent events and extract membership are stored in
  the clear), and no member id or pseudonym is logged or journaled. Each batch
  transaction that fed entries journals one event in the same transaction
  (action ``feed_stale_consent`` on resource ``deletion_feed``
  ``<purpose>:<version>``, actor ``vault:sweep``, policy hash ``none`` as for an
  operator's action) whose ``details`` carry the consumer, the epoch, the
  members judged and the entries fed: counts only, and every entry fed is
  covered by exactly one event, whichever process fed it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import IntegrityError

from audit.event import Actor, AuditEvent, Decision, event_time
from audit.store import AuditJournal
from vault.consent.service import ConsentService
from vault.consent.state import stale_from
from vault.extracts.feed import DeletionFeed, LeftReason
from vault.ids import new_id
from vault.purposes import Purpose, consent_purposes
from vault.storage.engine import write_transaction
from vault.storage.schema import deletion_feed_sweeps, extract_members, extracts

ACTION = "feed_stale_consent"
RESOURCE = "deletion_feed"
SWEEPER = Actor(subject="vault:sweep", roles=("system",), client_id=None, acting_staff=None)
BATCH = 5000  # held members judged (and fed) per write transaction


@dataclass(frozen=True, slots=True)
class StaleMoment:
    """From ``at`` on, grants of ``purpose`` under a version below ``notice_version`` no longer count."""

    purpose: Purpose
    notice_version: int
    at: datetime


@dataclass(frozen=True, slots=True)
class SweptMoment:
    """What this sweep did for one moment it completed: (consumer, epoch) pairs gone over, held members judged, feed entries added."""

    moment: StaleMoment
    epochs: int
    judged: int
    fed: int


@dataclass(frozen=True, slots=True)
class _Batch:
    """One write transaction's share of a moment: who is judged, for which consumer and epoch."""

    moment: StaleMoment
    consumer_id: str
    epoch: int
    member_ids: list[str]


class StaleConsentFeed:
    def __init__(self, consent: ConsentService, feed: DeletionFeed) -> None:
        self._consent = consent
        self._feed = feed
        self._journal = AuditJournal()

    def sweep(self, engine: Engine, now: datetime) -> list[SweptMoment]:
        """Sweep every moment due at ``now``, oldest first; the moments this call completed (not those another process completed first)."""
        with engine.connect() as conn:
            due = self.due(conn, now)
        return [done for moment in due if (done := self._sweep(engine, moment, now)) is not None]

    def due(self, conn: Connection, now: datetime) -> list[StaleMoment]:
        """The moments passed at ``now``, not swept yet, and with no extract of their purpose started before them still running."""
        swept = {(str(p), int(v)) for p, v in conn.execute(select(deletion_feed_sweeps.c.purpose, deletion_feed_sweeps.c.notice_version))}
        notices = self._consent.notices.every(conn)
        moments = []
        for purpose in consent_purposes():
            for before, notice in itertools.pairwise(notices[purpose]):
                at = stale_from(before.version, notices[purpose], self._consent.grace)
                if notice.material and at is not None and at <= now and (purpose.value, notice.version) not in swept:
                    moments.append(StaleMoment(purpose, notice.version, at))
        return [m for m in sorted(moments, key=lambda m: (m.at, m.purpose.value, m.notice_version)) if not _running_since_before(conn, m)]

    def _sweep(self, engine: Engine, moment: StaleMoment, now: datetime) -> SweptMoment | None:
        with engine.connect() as conn:
            holders = _holders(conn, moment.purpose)
        judged = fed = 0
        for consumer_id, epoch in holders:
            after = ""
            while True:
                with write_transaction(engine) as conn:
                    if _swept(conn, moment):
                        return None  # another process completed it meanwhile
                    batch = _Batch(moment, consumer_id, epoch, _held_after(conn, moment.purpose, consumer_id, epoch, after))
                    if not batch.member_ids:
                        break
                    added = self._feed_batch(conn, batch, now)
                judged += len(batch.member_ids)
                fed += added
                after = batch.member_ids[-1]
        claim = {"purpose": moment.purpose.value, "notice_version": moment.notice_version, "stale_at": moment.at, "swept_at": now}
        try:
            with write_transaction(engine) as conn:
                conn.execute(insert(deletion_feed_sweeps).values(**claim))
        except IntegrityError:  # another process completed it first (its row committed while this one swept)
            return None
        return SweptMoment(moment, len(holders), judged, fed)

    def _feed_batch(self, conn: Connection, batch: _Batch, now: datetime) -> int:
        """Feed the members of ``batch`` not live at ``now``, and journal what was fed, in the caller's transaction."""
        purpose = batch.moment.purpose
        live = self._consent.live_among_on_driver(conn, batch.member_ids, purpose, now)
        gone = [m for m in batch.member_ids if m not in live]
        added = self._feed.members_left(conn, batch.consumer_id, batch.epoch, gone, LeftReason.stale, now=now)
        if added:
            self._journal.append(conn, _event(batch, added, now), now=now)
        return added


def _swept(conn: Connection, moment: StaleMoment) -> bool:
    s = deletion_feed_sweeps.c
    return conn.execute(select(s.swept_at).where(s.purpose == moment.purpose.value, s.notice_version == moment.notice_version)).first() is not None


def _running_since_before(conn: Connection, moment: StaleMoment) -> bool:
    e = extracts.c
    started = select(e.extract_id).where(e.purpose == moment.purpose.value, e.status == "running", e.created_at < moment.at).limit(1)
    return conn.execute(started).first() is not None


def _holders(conn: Connection, purpose: Purpose) -> list[tuple[str, int]]:
    """The (consumer, epoch) pairs with a done extract for ``purpose``."""
    e = extracts.c
    rows = conn.execute(select(e.consumer_id, e.epoch).where(e.purpose == purpose.value, e.status == "done").distinct())
    return sorted((str(c), int(n)) for c, n in rows)


def _held_after(conn: Connection, purpose: Purpose, consumer_id: str, epoch: int, after: str) -> list[str]:
    """The next ``BATCH`` members above ``after`` the done extracts of (``consumer_id``, ``epoch``) for ``purpose`` held, distinct, in id order.

    Extract by extract, each a range of the primary key ``(extract_id,
    member_id)`` (``extract_members`` has no index on ``member_id`` alone): the
    ``BATCH`` smallest of the union are among each extract's ``BATCH`` smallest.
    """
    e, m = extracts.c, extract_members.c
    held_by = select(e.extract_id).where(e.consumer_id == consumer_id, e.epoch == epoch, e.purpose == purpose.value, e.status == "done")
    found: set[str] = set()
    for extract_id in [str(i) for i in conn.scalars(held_by)]:
        found.update(
            str(i) for i in conn.scalars(select(m.member_id).where(m.extract_id == extract_id, m.member_id > after).order_by(m.member_id).limit(BATCH))
        )
    return sorted(found)[:BATCH]


def _event(batch: _Batch, fed: int, now: datetime) -> AuditEvent:
    moment = batch.moment
    details: dict[str, int | str] = {"consumer": batch.consumer_id, "epoch": batch.epoch, "fed": fed, "judged": len(batch.member_ids)}
    return AuditEvent(
        time=event_time(now),
        request_id=f"sweep-{new_id()}",
        actor=SWEEPER,
        action=ACTION,
        resource_type=RESOURCE,
        resource_id=f"{moment.purpose.value}:{moment.notice_version}",
        member_id=None,
        fields=(),
        purpose=moment.purpose.value,
        decision=Decision.ALLOW,
        reason_code="consent_stale",
        policy_hash="none",
        outcome="ok",
        details=tuple(sorted(details.items())),
    )


__all__ = ["ACTION", "BATCH", "SWEEPER", "StaleConsentFeed", "StaleMoment", "SweptMoment"]
