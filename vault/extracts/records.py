"""Extract jobs as their consumer and the vault's housekeeping see them: one row of ``extracts`` each.

A job is ``running`` from the request that started it until its run ends
``done``, ``refused`` (k out of reach within the suppression cap) or
``failed`` (with a code; ``interrupted`` when its process stopped sending
heartbeats). A done extract started through the API keeps its rows sealed
until ``expires_at``; the sweep then purges them and sets ``purged_at``. The
manifest and the counts stay.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import Connection, Engine, Exists, exists, select, update
from sqlalchemy.exc import SQLAlchemyError

from vault.storage.engine import write_transaction
from vault.storage.schema import extract_members, extracts

INTERRUPTED = "interrupted"
HEARTBEAT = timedelta(seconds=20)
STALE_AFTER = timedelta(minutes=5)  # many heartbeats missed: the process running the job is gone
log = structlog.get_logger("vault.extracts")


@dataclass(frozen=True, slots=True)
class ExtractRecord:
    extract_id: str
    consumer_id: str
    purpose: str
    format: str
    epoch: int
    status: str
    k: int
    since: str | None
    row_count: int | None
    content_sha256: str | None
    content_bytes: int | None
    manifest: str | None
    reason: str | None
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None
    purged_at: datetime | None
    feed_seq: int | None  # the deletion feed's last seq when it was released (done only)

    def downloadable(self, now: datetime) -> bool:
        """Done, kept by the vault, and neither purged nor past its time."""
        return self.status == "done" and self.expires_at is not None and self.purged_at is None and now < self.expires_at


_COLUMNS = [extracts.c[name] for name in ExtractRecord.__dataclass_fields__]


@dataclass(frozen=True, slots=True)
class Holding:
    """A done extract that held a member: who received it, for what, and its audit event."""

    extract_id: str
    consumer_id: str
    purpose: str
    epoch: int
    released_at: datetime | None
    journal_id: int | None


def held_member(member_id: str) -> Exists:
    """A condition on ``extracts``: the extract held the member.

    ``extract_members`` has no index on ``member_id`` alone (each extract's
    members would land all over one, and every extract would rewrite it), so
    a member is found extract by extract: one seek of the primary key
    ``(extract_id, member_id)`` per extract, the extracts read first.
    """
    m = extract_members.c
    return exists().where(m.extract_id == extracts.c.extract_id, m.member_id == member_id)


def holdings(conn: Connection, member_id: str) -> list[Holding]:
    """Every done extract that held the member, oldest first (the member's access log lists them)."""
    e = extracts.c
    rows = conn.execute(
        select(e.extract_id, e.consumer_id, e.purpose, e.epoch, e.finished_at, e.journal_id)
        .where(e.status == "done", held_member(member_id))
        .order_by(e.created_at, e.extract_id)
    )
    return [Holding(str(i), str(c), str(p), int(n), at, None if j is None else int(j)) for i, c, p, n, at, j in rows]


def held_by_events(conn: Connection, journal_ids: Collection[int]) -> tuple[list[str], list[str]]:
    """The extracts whose audit events these are, and the members they held (both sorted): breach scoping."""
    e, m = extracts.c, extract_members.c
    wanted = sorted(set(journal_ids))
    if not wanted:
        return [], []
    ids = sorted(str(i) for i in conn.scalars(select(e.extract_id).where(e.journal_id.in_(wanted), e.status == "done")))
    if not ids:
        return [], []
    held = sorted({str(member) for member in conn.scalars(select(m.member_id).where(m.extract_id.in_(ids)))})
    return ids, held


def extract_record(conn: Connection, extract_id: str) -> ExtractRecord | None:
    row = conn.execute(select(*_COLUMNS).where(extracts.c.extract_id == extract_id)).first()
    return None if row is None else ExtractRecord(*row)


def beat(conn: Connection, extract_ids: Collection[str], now: datetime) -> None:
    """A sign of life for jobs that are still running (queued ones included)."""
    if extract_ids:
        conn.execute(update(extracts).where(extracts.c.extract_id.in_(sorted(extract_ids)), extracts.c.status == "running").values(heartbeat_at=now))


@contextmanager
def heartbeat(engine: Engine, extract_id: str, every: timedelta = HEARTBEAT) -> Iterator[None]:
    """While the block runs, a daemon thread records the job's sign of life every ``every``."""
    stop = threading.Event()

    def beating() -> None:
        while not stop.wait(every.total_seconds()):
            try:
                with write_transaction(engine) as conn:
                    beat(conn, (extract_id,), datetime.now(UTC))
            except SQLAlchemyError as exc:
                log.warning("extract.heartbeat_failed", extract_id=extract_id, error=type(exc).__name__.lower())

    thread = threading.Thread(target=beating, name="extract-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def interrupt(conn: Connection, extract_ids: Collection[str], now: datetime) -> None:
    """Mark these jobs ``failed``/``interrupted`` if they are still running (their process stops taking jobs)."""
    if extract_ids:
        e = extracts.c
        conn.execute(
            update(extracts).where(e.extract_id.in_(sorted(extract_ids)), e.status == "running").values(status="failed", reason=INTERRUPTED, finished_at=now)
        )


def interrupt_stale(conn: Connection, *, silent_since: datetime, now: datetime) -> list[str]:
    """Mark ``failed`` (``interrupted``) the running jobs with no heartbeat since ``silent_since``; their ids."""
    e = extracts.c
    stale = [str(i) for i in conn.scalars(select(e.extract_id).where(e.status == "running", e.heartbeat_at < silent_since))]
    for extract_id in stale:
        conn.execute(update(extracts).where(e.extract_id == extract_id, e.status == "running").values(status="failed", reason=INTERRUPTED, finished_at=now))
    return stale


def due_for_purge(conn: Connection, now: datetime) -> list[str]:
    """Kept extracts past their time, not purged yet."""
    e = extracts.c
    return [str(i) for i in conn.scalars(select(e.extract_id).where(e.expires_at <= now, e.purged_at.is_(None), e.status != "running"))]


def mark_purged(conn: Connection, extract_id: str, now: datetime) -> None:
    conn.execute(update(extracts).where(extracts.c.extract_id == extract_id, extracts.c.purged_at.is_(None)).values(purged_at=now))


__all__ = [
    "HEARTBEAT",
    "INTERRUPTED",
    "STALE_AFTER",
    "ExtractRecord",
    "Holding",
    "beat",
    "due_for_purge",
    "extract_record",
    "heartbeat",
    "held_by_events",
    "held_member",
    "holdings",
    "interrupt",
    "interrupt_stale",
    "mark_purged",
]
