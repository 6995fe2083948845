"""The audit tables refuse changes at the database level, and a change made anyway is caught by the offline verifier."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError

import audit.store
from audit.queries import export
from audit.store import audit_journal, audit_leaves, audit_nodes
from audit.verify import Finding, verify_export
from tests.audit.conftest import WriteEvents
from tests.audit.factories import sample_event, signed_checkpoint, signing_key, verifier

TABLES = ("audit_journal", "audit_leaves", "audit_nodes")
CHANGES = {
    "audit_journal": ("UPDATE audit_journal SET action = 'erase'", "DELETE FROM audit_journal"),
    "audit_leaves": ("UPDATE audit_leaves SET leaf_index = leaf_index + 100", "DELETE FROM audit_leaves"),
    "audit_nodes": ("UPDATE audit_nodes SET node_index = node_index + 100", "DELETE FROM audit_nodes"),
}
# Re-insert an existing row under the same key: SQLite's REPLACE would delete the old row without a delete trigger.
REPLACE = {
    "audit_journal": "INSERT OR REPLACE INTO audit_journal SELECT * FROM audit_journal WHERE journal_id = 1",
    "audit_leaves": "INSERT OR REPLACE INTO audit_leaves SELECT * FROM audit_leaves WHERE leaf_index = 0",
    "audit_nodes": "INSERT OR REPLACE INTO audit_nodes SELECT * FROM audit_nodes WHERE level = 0 AND node_index = 0",
}
UPSERT = {
    "audit_journal": (
        "INSERT INTO audit_journal OVERRIDING SYSTEM VALUE SELECT * FROM audit_journal LIMIT 1 ON CONFLICT (journal_id) DO UPDATE SET action = 'erase'"
    ),
    "audit_leaves": "INSERT INTO audit_leaves SELECT * FROM audit_leaves LIMIT 1 ON CONFLICT (leaf_index) DO UPDATE SET leaf_index = 99",
    "audit_nodes": "INSERT INTO audit_nodes SELECT * FROM audit_nodes LIMIT 1 ON CONFLICT (level, node_index) DO UPDATE SET node_index = 99",
}


@pytest.fixture
def sequenced(engine: Engine, write_events: WriteEvents, sequence_all: Callable[[], int]) -> tuple[int, bytes]:
    """Eight events, sequenced; the tree's size and root."""
    write_events([sample_event(n) for n in range(8)])
    sequence_all()
    with engine.connect() as conn:
        return audit.store.tree_size(conn), audit.store.root(conn, 8)


def _counts(engine: Engine) -> tuple[int, ...]:
    with engine.connect() as conn:
        return tuple(conn.execute(select(func.count()).select_from(t)).scalar_one() for t in (audit_journal, audit_leaves, audit_nodes))


def _unchanged(engine: Engine, sequenced: tuple[int, bytes]) -> None:
    assert _counts(engine) == (8, 8, 15)
    with engine.connect() as conn:
        assert (audit.store.tree_size(conn), audit.store.root(conn, 8)) == sequenced


def _sqlstate(error: DBAPIError) -> str:
    return str(getattr(error.orig, "sqlstate", ""))


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("kind", ["update", "delete", "replace"])
def test_sqlite_triggers_refuse_changing_an_audit_row(engine: Engine, sequenced: tuple[int, bytes], table: str, kind: str) -> None:
    statement = {"update": CHANGES[table][0], "delete": CHANGES[table][1], "replace": REPLACE[table]}[kind]
    with engine.begin() as conn, pytest.raises(IntegrityError, match="audit tables are append-only"):
        conn.execute(text(statement))
    _unchanged(engine, sequenced)


@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("kind", ["update", "delete", "truncate", "upsert"])
def test_postgres_application_role_may_not_change_an_audit_row(engine: Engine, sequenced: tuple[int, bytes], table: str, kind: str) -> None:
    statement = {"update": CHANGES[table][0], "delete": CHANGES[table][1], "truncate": f"TRUNCATE {table} CASCADE", "upsert": UPSERT[table]}[kind]
    with engine.begin() as conn, pytest.raises(ProgrammingError) as caught:
        conn.execute(text(statement))
    assert _sqlstate(caught.value) == "42501"  # insufficient_privilege
    _unchanged(engine, sequenced)


@pytest.mark.parametrize("backend", ["postgres"])
def test_postgres_application_role_holds_only_select_and_insert(engine: Engine) -> None:
    rights = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    with engine.connect() as conn:
        held = {
            table: [right for right in rights if conn.execute(text("SELECT has_table_privilege(:t, :r)"), {"t": table, "r": right}).scalar_one()]
            for table in TABLES
        }
        sequence = conn.execute(text("SELECT pg_get_serial_sequence('audit_journal', 'journal_id')")).scalar_one()
        has = text("SELECT has_sequence_privilege(:s, :r)")
        on_sequence = [right for right in ("USAGE", "SELECT", "UPDATE") if conn.execute(has, {"s": sequence, "r": right}).scalar_one()]
    assert held == {table: ["SELECT", "INSERT"] for table in TABLES}
    assert on_sequence == ["USAGE", "SELECT"]


@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("kind", ["update", "delete", "truncate"])
def test_postgres_triggers_refuse_even_the_superuser(
    engine: Engine, sequenced: tuple[int, bytes], owner_sql: Callable[[str], None], table: str, kind: str
) -> None:
    statement = {"update": CHANGES[table][0], "delete": CHANGES[table][1], "truncate": f"TRUNCATE {table} CASCADE"}[kind]
    with pytest.raises(DBAPIError, match="audit tables are append-only") as caught:
        owner_sql(statement)
    assert _sqlstate(caught.value) == "P0001"  # raise_exception, from the trigger
    _unchanged(engine, sequenced)


def _retyped_leaf(index: int) -> bytes:
    """The event at ``index``, rewritten as someone hiding the access would: another member, still canonical JSON."""
    return sample_event(index, member_id="m-someone-else").leaf_bytes()


@pytest.mark.parametrize("edited", [0, 5, 7])
def test_a_leaf_edited_with_the_trigger_dropped_is_caught_by_the_offline_verifier_at_its_index(
    engine: Engine, sequenced: tuple[int, bytes], forge_leaf: Callable[[int, bytes], None], edited: int
) -> None:
    key = signing_key("audit")
    with engine.connect() as conn:
        checkpoints = [signed_checkpoint(size, audit.store.root(conn, size), key) for size in range(1, 9)]
        assert verify_export(export(conn, 0, 8), checkpoints, [verifier(key)]).ok
    forge_leaf(edited, _retyped_leaf(edited))
    with engine.connect() as conn:
        report = verify_export(export(conn, 0, 8), checkpoints, [verifier(key)])
    assert (report.finding, report.first_bad_index, report.proven_size) == (Finding.ROOT_MISMATCH, edited, edited)
