"""The sequencer: gives journal entries their leaf index and stores the tree nodes.

One run is one transaction that holds the database's sequencer lock —
``pg_advisory_xact_lock(SEQUENCER_LOCK_KEY)`` on PostgreSQL, the write lock
(``BEGIN IMMEDIATE``) on SQLite — so runs from any number of threads and
processes follow each other. A run reads the tree size, resumes the
``CompactRange`` from stored nodes, takes up to ``max_batch`` journal entries
that have no leaf yet in journal-id order, numbers them from the tree size
on, and inserts their leaves and the nodes they complete in two batched
statements before one commit (group commit). Indices therefore have no gaps
and no duplicates; the primary key on ``leaf_index``, the unique
``journal_id`` of ``audit_leaves`` and the ``(level, node_index)`` key of
``audit_nodes`` enforce it even against a run that somehow lacked the lock.

On PostgreSQL identity values can commit out of order (an entry with a
smaller id may become visible after a larger one was sequenced); such an
entry simply gets the next index when a run sees it.

Finding the entries without a leaf does not rescan the whole journal. After
a run that took every entry it could see, this ``Sequencer`` remembers a
horizon below which every committed entry is certainly sequenced, and later
runs look only above it:

- PostgreSQL: the run's ``pg_snapshot_xmin`` — every transaction with a
  smaller id had ended before the run looked, so each entry it committed
  (its ``xact_id`` is smaller) was seen and sequenced; a transaction still
  running, or starting later, has an id at least that large. Entries with a
  NULL ``xact_id`` are always looked at.
- SQLite: the largest journal id at the run — under the write lock no other
  transaction is open, and a later entry's id (the rowid) is always larger.

A run that took a full batch (``max_batch`` entries, more may wait) also
moves the horizon on SQLite, to the last journal id it took: entries are
taken in journal-id order from the horizon on, so all below that one are
sequenced. Without it every full batch rescanned the journal from the
horizon, sequenced entries included.

A new ``Sequencer`` starts without a horizon and looks at the whole journal
once, so keep one per process.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, exists, func, or_, select, text
from sqlalchemy.sql.elements import ColumnElement

from audit._driver import BulkInsert
from audit.merkle import CompactRange, Node, leaf_hash
from audit.store import audit_journal, audit_leaves, audit_nodes, read_nodes, tree_size

SEQUENCER_LOCK_KEY = 6339585042398716162
"""The PostgreSQL advisory lock key: the first 8 bytes of SHA-256("member-vault audit sequencer"), signed."""

_INSERT_LEAVES = BulkInsert(audit_leaves, ("leaf_index", "journal_id", "leaf_hash", "sequenced_at"))
_INSERT_NODES = BulkInsert(audit_nodes, ("level", "node_index", "hash"))

# Execution option honoured by vault.storage.engine's SQLite engines: begin with BEGIN IMMEDIATE.
_SQLITE_IMMEDIATE = "sqlite_immediate"


class Sequencer:
    """Assigns leaf indices to journal entries; thread-safe, and safe across processes."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._horizon: int | None = None
        self._horizon_lock = threading.Lock()

    def run_until_idle(self, max_batch: int = 10_000, *, now: datetime | None = None) -> int:
        """Sequence batches until nothing is waiting; return how many entries in all."""
        total = 0
        while done := self.run_once(max_batch, now=now):
            total += done
        return total

    def run_once(self, max_batch: int = 10_000, *, now: datetime | None = None) -> int:
        """Sequence up to ``max_batch`` waiting entries in one transaction; return how many."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        sequenced_at = datetime.now(UTC) if now is None else now
        with self._horizon_lock:
            horizon = self._horizon
        with self._engine.connect() as conn:
            if self._postgres:
                # Each statement must see what committed before it: the lock is taken in the first one.
                conn.execution_options(isolation_level="READ COMMITTED")
            else:
                conn.execution_options(**{_SQLITE_IMMEDIATE: True})
            with conn.begin():
                next_horizon = self._lock(conn)
                count, last_taken = self._sequence(conn, horizon, max_batch, sequenced_at)
        if count < max_batch:
            advanced: int | None = next_horizon
        else:
            # A full batch: on SQLite the entries were taken in journal-id order from the horizon on, with no other
            # transaction open, so every entry up to the last one taken is sequenced. (PostgreSQL's horizon is a
            # transaction id, which a partial batch cannot establish.)
            advanced = None if self._postgres else last_taken
        if advanced is not None:
            with self._horizon_lock:
                self._horizon = max(self._horizon or 0, advanced)
        return count

    def _lock(self, conn: Connection) -> int:
        """Take the sequencer lock; return the horizon this run establishes if it takes every waiting entry."""
        if self._postgres:
            conn.execute(select(func.pg_advisory_xact_lock(SEQUENCER_LOCK_KEY)))
            return int(conn.execute(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")).scalar_one())
        # The transaction began with BEGIN IMMEDIATE (vault.storage.engine's hook): the write lock is held.
        last = conn.execute(select(func.max(audit_journal.c.journal_id))).scalar_one()
        return 0 if last is None else int(last)

    def _waiting(self, horizon: int | None) -> ColumnElement[bool]:
        no_leaf = ~exists().where(audit_leaves.c.journal_id == audit_journal.c.journal_id)
        if horizon is None:
            return no_leaf
        if self._postgres:
            return no_leaf & or_(audit_journal.c.xact_id.is_(None), audit_journal.c.xact_id >= horizon)
        return no_leaf & (audit_journal.c.journal_id > horizon)

    def _sequence(self, conn: Connection, horizon: int | None, max_batch: int, sequenced_at: datetime) -> tuple[int, int | None]:
        """Sequence up to ``max_batch`` waiting entries; return how many, and the journal id of the last one."""
        size = tree_size(conn)
        stmt = select(audit_journal.c.journal_id, audit_journal.c.leaf).where(self._waiting(horizon)).order_by(audit_journal.c.journal_id).limit(max_batch)
        entries = conn.execute(stmt).all()
        if not entries:
            return 0, None
        compact = read_nodes(conn, lambda get: CompactRange.from_stored(size, get))
        leaves: list[tuple[object, ...]] = []
        nodes: list[Node] = []
        for offset, (journal_id, data) in enumerate(entries):
            digest = leaf_hash(bytes(data))
            leaves.append((size + offset, journal_id, digest, sequenced_at))
            nodes.extend(compact.append(digest))
        _INSERT_LEAVES.run(conn, leaves)
        _INSERT_NODES.run(conn, [(n.level, n.index, n.hash) for n in nodes])
        return len(entries), int(entries[-1][0])


__all__ = ["SEQUENCER_LOCK_KEY", "Sequencer"]
