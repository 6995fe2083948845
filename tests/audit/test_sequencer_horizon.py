"""A long-lived ``Sequencer`` looks only above its horizon, full batches included, and still sequences every entry once, in order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from audit.sequencer import Sequencer
from audit.store import AuditJournal, audit_journal, audit_leaves
from tests.audit.factories import sample_event
from vault.storage.engine import write_transaction


@pytest.fixture
def waiting_queries(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The sequencer's 'entries without a leaf' SELECTs, with their parameters, as the driver receives them."""
    seen: list[tuple[str, Any]] = []

    def record(conn: object, cursor: object, statement: str, parameters: Any, context: object, executemany: bool) -> None:  # noqa: PLR0917  # SQLAlchemy's event signature
        if statement.lstrip().startswith("SELECT audit_journal.journal_id, audit_journal.leaf"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def _append(engine: Engine, first: int, count: int) -> None:
    with write_transaction(engine) as conn:
        AuditJournal().append_many(conn, [(sample_event(n), None) for n in range(first, first + count)])


def test_full_batches_move_the_horizon_and_every_entry_is_sequenced_once_in_journal_order(
    engine: Engine, backend: str, waiting_queries: list[tuple[str, Any]]
) -> None:
    sequencer = Sequencer(engine)
    _append(engine, 0, 25)
    assert sequencer.run_once(10) == 10  # full batches
    assert sequencer.run_once(10) == 10
    _append(engine, 25, 7)
    assert sequencer.run_until_idle(10) == 12
    with engine.connect() as conn:
        order = conn.execute(select(audit_leaves.c.journal_id).order_by(audit_leaves.c.leaf_index)).scalars().all()
        journal = conn.execute(select(audit_journal.c.journal_id).order_by(audit_journal.c.journal_id)).scalars().all()
    assert order == journal  # every entry once, in journal order, no gaps
    if backend == "sqlite":
        # The first run had no horizon; every later one looks only above the last entry an earlier run took.
        first, *later = waiting_queries
        assert "journal_id >" not in first[0]
        assert later
        assert all("audit_journal.journal_id > ?" in statement for statement, _ in later)
        assert [parameters[0] for _, parameters in later[:2]] == [journal[9], journal[19]]
