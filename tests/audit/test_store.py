"""The journal and the sequencer on real SQLite and PostgreSQL: contiguous indices, the stored tree, proofs from stored nodes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, select
from sqlalchemy import event as sa_event

import audit.checkpoints
import audit.store
import vault.storage.schema
from audit import merkle
from audit.errors import ProofRangeError
from audit.sequencer import Sequencer
from audit.store import AuditJournal, audit_journal, audit_leaves, audit_nodes
from tests.audit.conftest import WriteEvents
from tests.audit.factories import MemoryTree, sample_event

T0 = datetime(2026, 11, 22, 16, 0, 5, 123456, tzinfo=UTC)


def _stored_leaves(engine: Engine) -> list[tuple[int, int, bytes]]:
    """(leaf index, journal id, leaf hash) in index order."""
    with engine.connect() as conn:
        rows = conn.execute(select(audit_leaves.c.leaf_index, audit_leaves.c.journal_id, audit_leaves.c.leaf_hash).order_by(audit_leaves.c.leaf_index))
        return [(int(i), int(j), bytes(h)) for i, j, h in rows]


def test_the_migrated_data_database_matches_the_vault_and_audit_metadata(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), [vault.storage.schema.metadata, audit.store.metadata, audit.checkpoints.metadata])
    assert list(diff) == []


def test_append_stores_the_leaf_bytes_verbatim_and_the_query_columns(engine: Engine) -> None:
    event = sample_event(3, member_id="m-3", decision="deny")
    with engine.begin() as conn:
        journal_id = AuditJournal().append(conn, event, now=T0)
    with engine.connect() as conn:
        row = conn.execute(select(audit_journal).where(audit_journal.c.journal_id == journal_id)).one()
    assert bytes(row.leaf) == event.leaf_bytes()
    assert row.received_at == T0
    assert row.event_time == datetime(2026, 11, 22, 16, 0, 0, tzinfo=UTC)
    assert (row.member_id, row.actor_subject, row.actor_client_id, row.action, row.decision) == ("m-3", "staff:17", "front-desk", "read", "deny")


def test_append_refuses_a_naive_time_before_writing(engine: Engine) -> None:
    with engine.begin() as conn, pytest.raises(ValueError, match="now must be an aware datetime"):
        AuditJournal().append(conn, sample_event(1), now=datetime(2026, 11, 22, 16, 0))


def test_sequencing_in_batches_gives_contiguous_indices_in_journal_order(engine: Engine, write_events: WriteEvents) -> None:
    ids = write_events([sample_event(n) for n in range(20)])
    sequencer = Sequencer(engine)
    assert [sequencer.run_once(max_batch=7, now=T0) for _ in range(4)] == [7, 7, 6, 0]
    assert [(i, j) for i, j, _ in _stored_leaves(engine)] == list(enumerate(ids))
    more = write_events([sample_event(n) for n in range(20, 37)])
    assert sequencer.run_once(now=T0) == 17
    stored = _stored_leaves(engine)
    assert [(i, j) for i, j, _ in stored] == list(enumerate(ids + more))
    with engine.connect() as conn:
        assert audit.store.tree_size(conn) == 37
        assert set(conn.execute(select(audit_leaves.c.sequenced_at)).scalars()) == {T0}


def test_the_stored_nodes_are_exactly_the_complete_nodes_of_the_tree(engine: Engine, write_events: WriteEvents, sequence_all: Callable[[], int]) -> None:
    events = [sample_event(n) for n in range(13)]
    write_events(events[:5])
    sequence_all()
    write_events(events[5:])
    sequence_all()
    reference = MemoryTree()
    for event in events:
        reference.append_leaf(event.leaf_bytes())
    with engine.connect() as conn:
        nodes = {(int(level), int(index)): bytes(value) for level, index, value in conn.execute(select(audit_nodes))}
    assert nodes == reference.nodes


def test_roots_and_proofs_from_the_store_equal_the_pure_ones_and_verify(engine: Engine, write_events: WriteEvents, sequence_all: Callable[[], int]) -> None:
    events = [sample_event(n) for n in range(23)]
    for start in range(0, 23, 6):  # several sequencer runs, so the tree resumes from stored nodes
        write_events(events[start : start + 6])
        sequence_all()
    hashes = [merkle.leaf_hash(e.leaf_bytes()) for e in events]
    reference = MemoryTree()
    for event in events:
        reference.append_leaf(event.leaf_bytes())
    with engine.connect() as conn:
        assert [audit.store.leaf(conn, i) for i in range(23)] == [e.leaf_bytes() for e in events]
        roots = [audit.store.root(conn, size) for size in range(24)]
        assert roots == [merkle.root(hashes[:size]) for size in range(24)]
        for size in range(1, 24):
            proofs = audit.store.inclusion_proofs(conn, range(size), size)
            for index in range(size):
                expected = merkle.inclusion_proof(index, size, reference.reader(size))
                assert audit.store.inclusion_proof(conn, index, size) == proofs[index] == expected
                assert merkle.verify_inclusion(hashes[index], index, size, proofs[index], roots[size])
            for first in range(1, size + 1):
                proof = audit.store.consistency_proof(conn, first, size)
                assert proof == merkle.consistency_proof(first, size, reference.reader(size))
                assert merkle.verify_consistency(first, size, proof, roots[first], roots[size])


def test_an_empty_store_has_the_empty_root_and_nothing_to_sequence(engine: Engine) -> None:
    assert Sequencer(engine).run_once() == 0
    with engine.connect() as conn:
        assert audit.store.tree_size(conn) == 0
        assert audit.store.root(conn, 0) == merkle.EMPTY_ROOT


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda conn: audit.store.root(conn, 6), "tree size 6 is beyond the current tree size 5"),
        (lambda conn: audit.store.root(conn, -1), "tree size must not be negative"),
        (lambda conn: audit.store.inclusion_proof(conn, 5, 5), "leaf index must be at least 0 and below the tree size"),
        (lambda conn: audit.store.inclusion_proof(conn, -1, 5), "leaf index must be at least 0 and below the tree size"),
        (lambda conn: audit.store.inclusion_proof(conn, 0, 6), "tree size 6 is beyond the current tree size 5"),
        (lambda conn: audit.store.consistency_proof(conn, 0, 5), "consistency proof needs 1 ≤ first ≤ second"),
        (lambda conn: audit.store.consistency_proof(conn, 4, 3), "consistency proof needs 1 ≤ first ≤ second"),
        (lambda conn: audit.store.consistency_proof(conn, 1, 6), "tree size 6 is beyond the current tree size 5"),
        (lambda conn: audit.store.leaf(conn, 5), r"leaf index 5 is outside the current tree \[0, 5\)"),
        (lambda conn: audit.store.leaf(conn, -1), r"leaf index -1 is outside the current tree \[0, 5\)"),
    ],
)
def test_numbers_that_name_no_leaf_or_tree_are_refused_with_the_reason(
    engine: Engine, write_events: WriteEvents, sequence_all: Callable[[], int], call: Callable[..., object], reason: str
) -> None:
    write_events([sample_event(n) for n in range(5)])
    sequence_all()
    write_events([sample_event(5)])  # journaled but not sequenced: not part of the tree yet
    with engine.connect() as conn, pytest.raises(ProofRangeError, match=reason):
        call(conn)


def test_a_proof_is_one_query_for_its_nodes(engine: Engine, write_events: WriteEvents, sequence_all: Callable[[], int]) -> None:
    write_events([sample_event(n) for n in range(40)])
    sequence_all()
    statements: list[str] = []
    with engine.connect() as conn:
        sa_event.listen(conn, "before_cursor_execute", lambda *args: statements.append(args[2]))
        audit.store.inclusion_proof(conn, 17, 39)
        audit.store.consistency_proof(conn, 13, 39)
    queries = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(queries) == 4  # each proof: the tree size, then its nodes
    assert ["audit_nodes" in q for q in queries] == [False, True, False, True]


def test_max_batch_must_be_positive(engine: Engine) -> None:
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        Sequencer(engine).run_once(max_batch=0)


@pytest.mark.parametrize("backend", ["postgres"])
def test_an_entry_committed_after_a_later_one_was_sequenced_gets_the_next_index(engine: Engine, write_events: WriteEvents) -> None:
    """On PostgreSQL identity values commit out of order; the late entry is still found, however far the sequencer has moved on."""
    sequencer = Sequencer(engine)
    journal = AuditJournal()
    with engine.connect() as slow:
        slow_txn = slow.begin()
        slow_id = journal.append(slow, sample_event(0))
        fast_ids = write_events([sample_event(n) for n in range(1, 4)])
        assert sequencer.run_once() == 3
        assert sequencer.run_once() == 0
        more_ids = write_events([sample_event(4)])
        assert sequencer.run_once() == 1
        slow_txn.commit()
    assert slow_id < fast_ids[0]
    assert sequencer.run_once() == 1
    assert [j for _, j, _ in _stored_leaves(engine)] == [*fast_ids, *more_ids, slow_id]


def test_every_journal_entry_has_exactly_one_leaf_after_sequencing(engine: Engine, write_events: WriteEvents, sequence_all: Callable[[], int]) -> None:
    ids = write_events([sample_event(n) for n in range(9)])
    assert sequence_all() == 9
    assert Sequencer(engine).run_once() == 0  # a fresh sequencer looks at the whole journal and finds nothing left
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_leaves)).scalar_one() == len(ids)
        assert sorted(conn.execute(select(audit_leaves.c.journal_id)).scalars()) == ids
