"""How ``extract_members`` is stored (migration 0014), on real SQLite and PostgreSQL.

On SQLite the table is a WITHOUT ROWID table: its rows live in the primary
key's B-tree ``(extract_id, member_id)``, once, with no separate index. The
migration rebuilds the table with its rows and its append-only triggers, and
its downgrade rebuilds the rowid table the same way; on PostgreSQL it changes
nothing. Either way the rows are the same and still cannot be updated,
deleted or replaced.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from api.runtime import Runtime
from tests.vault.factories import migrate_data, other_member_values, stored_extract
from vault.clients import ROOT_KEY, ClientRegistry
from vault.extracts.consumers import ConsumerRegistry
from vault.storage.engine import write_transaction
from vault.storage.schema import extract_members

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
BEFORE = "0013_consent_last_event"
MESSAGE = "append-only"
TRIGGERS = {"extract_members_no_update", "extract_members_no_delete", "extract_members_no_replace"}

Row = tuple[str, str, str | None]


@pytest.fixture
def held(runtime: Runtime) -> list[Row]:
    """Two extracts holding three members between them (one member in both)."""
    with write_transaction(runtime.data_engine) as conn:
        members = [runtime.members.create(conn, other_member_values(n)) for n in (1, 2, 3)]
        ClientRegistry(runtime.keys.root_key(ROOT_KEY)).add(conn, "loyalty-app", ["loyalty_service"], [], NOW)
        ConsumerRegistry().register(conn, "loyalty-app", purpose="loyalty_profiling", attributes=["tier"], health=False, now=NOW)
        first, second = stored_extract(conn, NOW), stored_extract(conn, NOW)
        rows: list[Row] = [(first, members[0], "aa" * 16), (first, members[1], None), (second, members[1], "bb" * 16), (second, members[2], "cc" * 16)]
        conn.execute(insert(extract_members), [{"extract_id": e, "member_id": m, "row_mac": mac} for e, m, mac in rows])
    return sorted(rows)


def _rows(engine: Engine) -> list[Row]:
    with engine.connect() as conn:
        return sorted((str(e), str(m), None if mac is None else str(mac)) for e, m, mac in conn.execute(select(extract_members)))


def _sqlite_layout(engine: Engine) -> tuple[str, list[str], set[str]]:
    """The table's SQL, the names of its indexes, the names of its triggers."""
    with engine.connect() as conn:
        found = conn.exec_driver_sql("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'extract_members'").all()
    table = next(str(sql) for kind, _, sql in found if kind == "table")
    return table, sorted(str(name) for kind, name, _ in found if kind == "index"), {str(name) for kind, name, _ in found if kind == "trigger"}


def _refuses_every_change(engine: Engine, row: Row) -> None:
    """The append-only triggers refuse an UPDATE, a DELETE and (SQLite) an INSERT OR REPLACE of ``row``."""
    extract_id, member_id, _ = row
    m = extract_members.c
    changes = [
        update(extract_members).where(m.extract_id == extract_id, m.member_id == member_id).values(row_mac="dd" * 16),
        delete(extract_members).where(m.extract_id == extract_id, m.member_id == member_id),
    ]
    if engine.dialect.name == "sqlite":
        changes.append(
            text("INSERT OR REPLACE INTO extract_members (extract_id, member_id, row_mac) VALUES (:e, :m, 'dd')").bindparams(e=extract_id, m=member_id)
        )
    for change in changes:
        with pytest.raises(DBAPIError, match=MESSAGE), engine.begin() as conn:
            conn.execute(change)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_on_sqlite_the_table_is_its_primary_key_with_no_second_copy(runtime: Runtime, held: list[Row]) -> None:
    table, indexes, triggers = _sqlite_layout(runtime.data_engine)

    assert table.rstrip().endswith("WITHOUT ROWID")
    assert indexes == []  # no sqlite_autoindex_extract_members_1: the key is the table
    assert triggers == TRIGGERS
    with runtime.data_engine.connect() as conn:
        plan = [str(r[3]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN SELECT member_id FROM extract_members WHERE extract_id = ?", (held[0][0],))]
    assert any("USING PRIMARY KEY (extract_id=?)" in step for step in plan), plan
    assert _rows(runtime.data_engine) == held


def test_0014_keeps_the_rows_and_the_triggers_both_ways(runtime: Runtime, owner: Engine, held: list[Row]) -> None:
    engine = runtime.data_engine
    sqlite = engine.dialect.name == "sqlite"

    migrate_data(owner, BEFORE, down=True)

    assert _rows(engine) == held
    _refuses_every_change(owner, held[0])  # the owner: the app's role may not even try on PostgreSQL (revoked)
    if sqlite:
        table, indexes, triggers = _sqlite_layout(engine)
        assert "WITHOUT ROWID" not in table
        assert indexes == ["sqlite_autoindex_extract_members_1"]  # the rowid table and its key's index, as 0007 made them
        assert triggers == TRIGGERS

    migrate_data(owner, "head")

    assert _rows(engine) == held
    _refuses_every_change(owner, held[-1])
    if sqlite:
        table, indexes, triggers = _sqlite_layout(engine)
        assert table.rstrip().endswith("WITHOUT ROWID")
        assert indexes == []
        assert triggers == TRIGGERS


@pytest.mark.parametrize("backend", ["sqlite"])
def test_0014_refuses_to_rebuild_a_table_with_an_index_it_does_not_know_and_changes_nothing(runtime: Runtime, owner: Engine, held: list[Row]) -> None:
    """An index an operator added would be lost with the old table: the upgrade stops instead, and its transaction rolls back."""
    migrate_data(owner, BEFORE, down=True)
    with owner.begin() as conn:
        conn.exec_driver_sql("CREATE INDEX ix_operator_row_mac ON extract_members (row_mac)")

    with pytest.raises(RuntimeError, match="extract_members is not the table this migration expects; rebuild refused"):
        migrate_data(owner, "head")

    table, indexes, triggers = _sqlite_layout(runtime.data_engine)
    assert "WITHOUT ROWID" not in table
    assert indexes == ["ix_operator_row_mac", "sqlite_autoindex_extract_members_1"]
    assert triggers == TRIGGERS
    assert _rows(runtime.data_engine) == held
