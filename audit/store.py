"""The audit log's tables in the data database, the journal append, and reads of the stored tree.

Tables (SQLAlchemy Core, created by the data database's migration
``0002_audit``; this module's ``metadata`` is one of that history's targets):

- ``audit_journal``: one row per event, inserted by ``AuditJournal.append`` in
  the caller's transaction (the fail-closed point). ``leaf`` holds exactly
  ``AuditEvent.leaf_bytes()``; the other columns copy event fields for the
  queries. ``xact_id`` is the inserting transaction's id on PostgreSQL
  (``pg_current_xact_id()``, NULL on SQLite): it lets the sequencer skip
  entries that are certainly sequenced already (see ``audit.sequencer``).
- ``audit_leaves``: leaf index → journal entry, with the leaf hash. Only the
  sequencer writes it: indices run 0, 1, 2, … and each entry has at most one.
- ``audit_nodes``: every complete tree node ``(level, node_index)`` (see
  ``audit.merkle``), stored once, when its last leaf is sequenced.

All three are append-only in the database: triggers refuse UPDATE and DELETE
(and TRUNCATE on PostgreSQL), and the application role holds only SELECT and
INSERT on them.

Tree reads serve any size up to ``tree_size(conn)`` from stored nodes: a root
or a proof costs one query for its O(log n) nodes, never a recomputation.
Numbers that name no leaf or tree raise ``ProofRangeError`` with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    cast,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.types import TypeDecorator

from audit import merkle
from audit._driver import BulkInsert
from audit._time import parse_utc
from audit.errors import AuditStoreError, NodeStoreError, ProofRangeError
from audit.event import AuditEvent

# Constraint and index names of every table in the data database (the vault's tables use it too).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING_CONVENTION)

IDENT_LENGTH = 256
CODE_LENGTH = 64
_NODE_READ_CHUNK = 500  # (level, index) pairs per query: two bound parameters each, far below SQLite's limit
_T = TypeVar("_T")


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite keeps no zone: it is restored on read).

    A naive datetime is refused on write rather than guessed at. The vault's
    tables use this type too.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ident(name: str, *, nullable: bool) -> Column[str]:
    return Column(name, String(IDENT_LENGTH), nullable=nullable)


audit_journal = Table(
    "audit_journal",
    metadata,
    # INTEGER on SQLite, so the id is the rowid: a new entry always gets max + 1.
    Column("journal_id", BigInteger().with_variant(Integer(), "sqlite"), Identity(always=True), primary_key=True),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("xact_id", BigInteger(), nullable=True),
    Column("leaf", LargeBinary(), nullable=False),
    Column("event_time", UtcDateTime(), nullable=False),
    _ident("member_id", nullable=True),
    _ident("actor_subject", nullable=False),
    _ident("actor_client_id", nullable=True),
    Column("action", String(CODE_LENGTH), nullable=False),
    Column("decision", String(8), nullable=False),
    CheckConstraint("decision IN ('allow', 'deny')", name="decision"),
    Index(None, "member_id", "event_time"),
    Index(None, "actor_subject", "event_time"),
    Index(None, "actor_client_id", "event_time"),
    Index(None, "action", "event_time"),
    Index(None, "event_time"),
    Index(None, "xact_id"),
)

audit_leaves = Table(
    "audit_leaves",
    metadata,
    Column("leaf_index", BigInteger(), primary_key=True, autoincrement=False),
    Column("journal_id", BigInteger(), ForeignKey("audit_journal.journal_id"), nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("sequenced_at", UtcDateTime(), nullable=False),
    UniqueConstraint("journal_id"),
    CheckConstraint("leaf_index >= 0", name="leaf_index"),
    CheckConstraint("length(leaf_hash) = 32", name="leaf_hash"),
)

audit_nodes = Table(
    "audit_nodes",
    metadata,
    Column("level", SmallInteger(), primary_key=True, autoincrement=False),
    Column("node_index", BigInteger(), primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
    CheckConstraint("level >= 0 AND level < 64", name="level"),
    CheckConstraint("node_index >= 0", name="node_index"),
    CheckConstraint("length(hash) = 32", name="hash"),
)


_INSERT = insert(audit_journal)
_INSERT_POSTGRES = _INSERT.values(xact_id=cast(cast(func.pg_current_xact_id(), Text), BigInteger))
_APPEND = _INSERT.returning(audit_journal.c.journal_id)
_APPEND_POSTGRES = _INSERT_POSTGRES.returning(audit_journal.c.journal_id)


_ROW_COLUMNS = ("received_at", "leaf", "event_time", "member_id", "actor_subject", "actor_client_id", "action", "decision")
_BULK_APPEND = BulkInsert(audit_journal, _ROW_COLUMNS)


class AuditJournal:
    """Writes events into the journal, inside the caller's transaction."""

    def append(self, conn: Connection, event: AuditEvent, *, now: datetime | None = None) -> int:
        """Insert ``event`` on ``conn`` (one INSERT, never a commit); return its journal id.

        ``now`` is the time received (default: the clock). If the insert fails
        the error is ``AuditStoreError`` and the caller's transaction — its
        data write included — must roll back; the database's message is only
        chained (it can quote values).
        """
        statement = _APPEND_POSTGRES if conn.dialect.name == "postgresql" else _APPEND
        try:
            return int(conn.execute(statement, _row(event, now)).scalar_one())
        except SQLAlchemyError as exc:
            raise AuditStoreError("the audit journal could not be written") from exc

    def append_many(self, conn: Connection, events: Sequence[tuple[AuditEvent, datetime | None]]) -> None:
        """Insert several ``(event, now)`` in one batched statement (``executemany``), never a commit.

        The entries get journal ids in the order given. Same failure rule as
        ``append``: ``AuditStoreError``, and the caller's transaction rolls back.
        """
        if not events:
            return
        try:
            if conn.dialect.name == "postgresql":
                conn.execute(_INSERT_POSTGRES, [_row(event, now) for event, now in events])
            else:
                _BULK_APPEND.run(conn, [_positional(_row(event, now)) for event, now in events])
        except SQLAlchemyError as exc:
            raise AuditStoreError("the audit journal could not be written") from exc


def _positional(row: dict[str, object]) -> tuple[object, ...]:
    return tuple(row[name] for name in _ROW_COLUMNS)


def _row(event: AuditEvent, now: datetime | None) -> dict[str, object]:
    received = datetime.now(UTC) if now is None else now
    if received.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    return {
        "received_at": received,
        "leaf": event.leaf_bytes(),
        "event_time": parse_utc(event.time),
        "member_id": event.member_id,
        "actor_subject": event.actor.subject,
        "actor_client_id": event.actor.client_id,
        "action": event.action,
        "decision": event.decision.value,
    }


# -- the stored tree ------------------------------------------------------------------


def tree_size(conn: Connection) -> int:
    """The number of sequenced leaves."""
    last = conn.execute(select(func.max(audit_leaves.c.leaf_index))).scalar_one()
    return 0 if last is None else int(last) + 1


def leaf(conn: Connection, index: int) -> bytes:
    """The leaf bytes at ``index`` (exactly the journal's ``leaf``)."""
    stmt = select(audit_journal.c.leaf).join(audit_leaves, audit_leaves.c.journal_id == audit_journal.c.journal_id).where(audit_leaves.c.leaf_index == index)
    found = conn.execute(stmt).scalar_one_or_none()
    if found is None:
        raise ProofRangeError(f"leaf index {index} is outside the current tree [0, {tree_size(conn)})")
    return bytes(found)


def root(conn: Connection, size: int) -> bytes:
    """The root of the first ``size`` leaves, 0 ≤ size ≤ ``tree_size``."""
    check_size(conn, size)
    return read_nodes(conn, lambda get: merkle.root_at(size, get))


def inclusion_proof(conn: Connection, index: int, size: int) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:size]) for 0 ≤ index < size ≤ ``tree_size``."""
    return inclusion_proofs(conn, [index], size)[0]


def inclusion_proofs(conn: Connection, indices: Sequence[int], size: int) -> list[list[bytes]]:
    """The inclusion proofs of several leaves against one size, with one read of their nodes."""
    check_size(conn, size)
    return read_nodes(conn, lambda get: [merkle.inclusion_proof(index, size, get) for index in indices])


def consistency_proof(conn: Connection, first: int, second: int) -> list[bytes]:
    """RFC 6962 PROOF(first, D[0:second]) for 1 ≤ first ≤ second ≤ ``tree_size``."""
    check_size(conn, second)
    return read_nodes(conn, lambda get: merkle.consistency_proof(first, second, get))


def check_size(conn: Connection, size: int) -> None:
    """``ProofRangeError`` unless 0 ≤ ``size`` ≤ the current tree size."""
    if size < 0:
        raise ProofRangeError("tree size must not be negative")
    current = tree_size(conn)
    if size > current:
        raise ProofRangeError(f"tree size {size} is beyond the current tree size {current}")


def read_nodes(conn: Connection, compute: Callable[[merkle.NodeReader], _T]) -> _T:
    """Run ``compute`` against the stored nodes, reading all it needs in one pass.

    Which nodes a root or proof reads depends only on the numbers, never on the
    hashes; so ``compute`` runs once with placeholders to learn the addresses,
    they are fetched together, and it runs again on the real hashes.
    """
    wanted: list[tuple[int, int]] = []

    def record(level: int, index: int) -> bytes:
        wanted.append((level, index))
        return bytes(merkle.HASH_SIZE)

    compute(record)
    found = _fetch(conn, dict.fromkeys(wanted))

    def get_node(level: int, index: int) -> bytes:
        value = found.get((level, index))
        if value is None:
            raise NodeStoreError(f"stored node ({level}, {index}) is missing")
        return value

    return compute(get_node)


def _fetch(conn: Connection, addresses: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored hashes at these addresses, as ``level = l AND node_index IN (…)`` terms (each an index range scan on both backends)."""
    pending = list(addresses)
    found: dict[tuple[int, int], bytes] = {}
    nodes = audit_nodes.c
    for start in range(0, len(pending), _NODE_READ_CHUNK):
        by_level: dict[int, list[int]] = {}
        for level, index in pending[start : start + _NODE_READ_CHUNK]:
            by_level.setdefault(level, []).append(index)
        where = or_(*(and_(nodes.level == level, nodes.node_index.in_(indices)) for level, indices in by_level.items()))
        for level, index, value in conn.execute(select(nodes.level, nodes.node_index, nodes.hash).where(where)):
            found[(int(level), int(index))] = bytes(value)
    return found


__all__ = [
    "AuditJournal",
    "AuditStoreError",
    "audit_journal",
    "audit_leaves",
    "audit_nodes",
    "check_size",
    "consistency_proof",
    "inclusion_proof",
    "inclusion_proofs",
    "leaf",
    "metadata",
    "read_nodes",
    "root",
    "tree_size",
]
