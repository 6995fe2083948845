"""Concurrent appenders and sequencers across processes and threads build one tree with contiguous indices."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

import audit.store
from api.runtime import Runtime
from audit import merkle
from audit.queries import export
from audit.sequencer import Sequencer
from audit.store import audit_journal, audit_leaves
from audit.verify import verify_export
from tests.audit import concurrency_worker
from tests.audit.factories import signed_checkpoint, signing_key, verifier

PROCESSES, THREADS, PER_THREAD = 2, 4, 50
TOTAL = PROCESSES * THREADS * PER_THREAD
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spawned processes get this sys.path: let them import ``tests.audit.concurrency_worker``."""
    monkeypatch.syspath_prepend(str(ROOT))


def test_two_processes_of_four_threads_build_one_contiguous_tree(runtime: Runtime, engine: Engine) -> None:
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=concurrency_worker.run, args=(runtime.settings.data_url, p, THREADS, PER_THREAD)) for p in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    Sequencer(engine).run_once()

    with engine.connect() as conn:
        rows = conn.execute(
            select(audit_leaves.c.leaf_index, audit_leaves.c.journal_id, audit_leaves.c.leaf_hash, audit_journal.c.leaf)
            .join(audit_journal, audit_journal.c.journal_id == audit_leaves.c.journal_id)
            .order_by(audit_leaves.c.leaf_index)
        ).all()
        journal_ids = sorted(conn.execute(select(audit_journal.c.journal_id)).scalars())
        size = audit.store.tree_size(conn)
        stored_root = audit.store.root(conn, size)
        key = signing_key("audit")
        report = verify_export(export(conn, 0, size), [signed_checkpoint(size, stored_root, key)], [verifier(key)])

    assert size == TOTAL
    assert [r.leaf_index for r in rows] == list(range(TOTAL))
    assert sorted(r.journal_id for r in rows) == journal_ids
    assert len(journal_ids) == TOTAL
    assert all(bytes(r.leaf_hash) == merkle.leaf_hash(bytes(r.leaf)) for r in rows)
    assert stored_root == merkle.root(merkle.leaf_hash(bytes(r.leaf)) for r in rows)
    assert len({bytes(r.leaf) for r in rows}) == TOTAL  # every request's event, once
    assert report.ok, report


@pytest.mark.parametrize("backend", ["postgres"])
def test_sequencers_in_many_threads_never_number_an_entry_twice(runtime: Runtime, engine: Engine) -> None:
    """Each of the sequencers runs with its own horizon; the database lock alone keeps the numbering right."""
    worker = multiprocessing.get_context("spawn").Process(target=concurrency_worker.run, args=(runtime.settings.data_url, 0, 8, 25))
    worker.start()
    worker.join(timeout=300)
    assert worker.exitcode == 0
    Sequencer(engine).run_once()
    with engine.connect() as conn:
        indices = list(conn.execute(select(audit_leaves.c.leaf_index).order_by(audit_leaves.c.leaf_index)).scalars())
    assert indices == list(range(200))
