"""``extract_members``, ``deletion_feed`` and ``extract_departures`` are append-only at the database level, like the audit tables.

On SQLite, triggers refuse UPDATE, DELETE and INSERT OR REPLACE on every
connection; on PostgreSQL, row and TRUNCATE triggers refuse them for every role,
the owner included, and the application role holds no UPDATE, DELETE or
TRUNCATE grant at all. Nothing changes in any of them after a refusal.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.exc import DBAPIError

from api.runtime import Runtime
from tests.vault.factories import other_member_values, stored_extract
from vault.clients import ROOT_KEY, ClientRegistry
from vault.extracts.consumers import ConsumerRegistry
from vault.storage.engine import write_transaction
from vault.storage.schema import deletion_feed, extract_departures, extract_members

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
MESSAGES = {
    "extract_members": "extract membership and the deletion feed are append-only",
    "deletion_feed": "extract membership and the deletion feed are append-only",
    "extract_departures": "extract departures are append-only",
}
CHANGES = {
    "extract_members": ("UPDATE extract_members SET member_id = extract_id", "DELETE FROM extract_members"),
    "deletion_feed": ("UPDATE deletion_feed SET reason = 'erased'", "DELETE FROM deletion_feed"),
    "extract_departures": ("UPDATE extract_departures SET reason = 'erased'", "DELETE FROM extract_departures"),
}
REPLACE = {
    "extract_members": "INSERT OR REPLACE INTO extract_members (extract_id, member_id) SELECT extract_id, member_id FROM extract_members",
    "deletion_feed": (
        "INSERT OR REPLACE INTO deletion_feed (seq, consumer_id, epoch, pseudonym, reason, at) "
        "SELECT seq, consumer_id, epoch, pseudonym, reason, at FROM deletion_feed"
    ),
    "extract_departures": (
        "INSERT OR REPLACE INTO extract_departures (extract_id, member_id, reason, at) SELECT extract_id, member_id, 'restricted', at FROM extract_departures"
    ),
}
Rows = dict[str, list[tuple[object, ...]]]


def _rows(engine: Engine) -> Rows:
    with engine.connect() as conn:
        return {t.name: [tuple(r) for r in conn.execute(select(t))] for t in (extract_members, deletion_feed, extract_departures)}


@pytest.fixture
def stored(runtime: Runtime) -> Rows:
    with write_transaction(runtime.data_engine) as conn:
        member_id = runtime.members.create(conn, other_member_values(5))
        ClientRegistry(runtime.keys.root_key(ROOT_KEY)).add(conn, "loyalty-app", ["loyalty_service"], [], NOW)
        ConsumerRegistry().register(conn, "loyalty-app", purpose="loyalty_profiling", attributes=["tier"], health=False, now=NOW)
        extract_id = stored_extract(conn, NOW)
        conn.execute(insert(extract_members).values(extract_id=extract_id, member_id=member_id))
        conn.execute(insert(deletion_feed).values(consumer_id="loyalty-app", epoch=1, pseudonym="ab" * 16, reason="withdrawn", at=NOW))
        conn.execute(insert(extract_departures).values(extract_id=extract_id, member_id=member_id, reason="withdrawn", at=NOW))
    rows = _rows(runtime.data_engine)
    assert [len(r) for r in rows.values()] == [1, 1, 1]
    return rows


@pytest.mark.parametrize("table", sorted(CHANGES))
def test_rows_cannot_be_changed_or_deleted_by_the_app_or_the_owner(runtime: Runtime, owner: Engine, stored: object, table: str) -> None:
    for engine in (runtime.data_engine, owner):
        for statement in CHANGES[table]:
            with pytest.raises(DBAPIError) as refused, engine.begin() as conn:
                conn.execute(text(statement))
            if runtime.data_engine.dialect.name == "sqlite" or engine is owner:
                assert MESSAGES[table] in str(refused.value)
    assert _rows(runtime.data_engine) == stored


@pytest.mark.parametrize("table", sorted(REPLACE))
def test_sqlite_refuses_insert_or_replace(runtime: Runtime, stored: object, table: str) -> None:
    if runtime.data_engine.dialect.name != "sqlite":
        pytest.skip("INSERT OR REPLACE is SQLite's")
    with pytest.raises(DBAPIError, match=MESSAGES[table]), runtime.data_engine.begin() as conn:
        conn.execute(text(REPLACE[table]))
    assert _rows(runtime.data_engine) == stored


@pytest.mark.parametrize("table", sorted(CHANGES))
def test_postgres_refuses_truncate_for_every_role(runtime: Runtime, owner: Engine, stored: object, table: str) -> None:
    if runtime.data_engine.dialect.name != "postgresql":
        pytest.skip("TRUNCATE is PostgreSQL's")
    for engine in (runtime.data_engine, owner):
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {table} CASCADE"))
    assert _rows(runtime.data_engine) == stored
