"""Migration ``0010_stale_feed`` on real SQLite and PostgreSQL: the feed takes ``stale``, stays append-only, and the sweeps table is too.

* Up and down: at ``0009`` the feed refuses the reason ``stale`` and there is
  no sweeps table; at ``0010`` it takes ``stale`` and still refuses any other
  reason. On SQLite the feed is rebuilt; its index and its no-update,
  no-delete and no-replace triggers are stored exactly as at ``0009``, and its
  rows keep their ``seq``. On PostgreSQL its row and TRUNCATE triggers stay and
  the application role still holds no UPDATE, DELETE or TRUNCATE right.
* ``deletion_feed_sweeps`` refuses UPDATE, DELETE (the application role and
  the owner), INSERT OR REPLACE (SQLite) and TRUNCATE (PostgreSQL, every role);
  the application role holds no right to change it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, Engine, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from api.runtime import Runtime
from tests.vault.factories import migrate_data
from vault.clients import ROOT_KEY, ClientRegistry
from vault.extracts.consumers import ConsumerRegistry
from vault.storage.engine import write_transaction
from vault.storage.schema import deletion_feed, deletion_feed_sweeps

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
BEFORE = "0009_extract_indexes"
SWEEPS_MESSAGE = "the deletion feed sweeps are append-only"
FEED_TRIGGERS_PG = ["deletion_feed_append_only", "deletion_feed_no_truncate"]


def _feed_row(pseudonym: str, reason: str) -> dict[str, object]:
    return {"consumer_id": "loyalty-app", "epoch": 1, "pseudonym": pseudonym, "reason": reason, "at": NOW}


def _stored(conn: Connection) -> list[tuple[str, str, str]]:
    """The feed's index and triggers as the database stores them (SQLite: their text; PostgreSQL: trigger names and definitions)."""
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'deletion_feed' AND type IN ('index', 'trigger')")
    else:
        rows = conn.exec_driver_sql(
            "SELECT 'trigger', tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'deletion_feed'::regclass AND NOT tgisinternal "
            "UNION ALL SELECT 'index', indexname, indexdef FROM pg_indexes WHERE tablename = 'deletion_feed'"
        )
    return sorted((str(k), str(n), str(s)) for k, n, s in rows if s is not None)


def _app_rights(conn: Connection, table: str) -> set[str]:
    rights = ("UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    return {r for r in rights if conn.execute(text(f"SELECT has_table_privilege(current_user, '{table}', '{r}')")).scalar_one()}


@pytest.fixture
def consumer(runtime: Runtime) -> None:
    with write_transaction(runtime.data_engine) as conn:
        ClientRegistry(runtime.keys.root_key(ROOT_KEY)).add(conn, "loyalty-app", ["loyalty_service"], [], NOW)
        ConsumerRegistry().register(conn, "loyalty-app", purpose="loyalty_profiling", attributes=["tier"], health=False, now=NOW)


def test_down_and_up_again_the_feed_takes_stale_only_at_0010_and_keeps_its_protections(runtime: Runtime, owner: Engine, consumer: None) -> None:
    with owner.connect() as conn:
        at_head = _stored(conn)
    migrate_data(owner, BEFORE, down=True)
    with owner.connect() as conn:
        at_0009 = _stored(conn)
        assert conn.dialect.has_table(conn, "deletion_feed_sweeps") is False
    with pytest.raises(IntegrityError), write_transaction(runtime.data_engine) as conn:
        conn.execute(insert(deletion_feed).values(**_feed_row("aa" * 16, "stale")))
    with write_transaction(runtime.data_engine) as conn:
        kept = conn.execute(insert(deletion_feed).values(**_feed_row("bb" * 16, "withdrawn")).returning(deletion_feed.c.seq)).scalar_one()

    migrate_data(owner, "0010_stale_feed")

    with owner.connect() as conn:
        assert _stored(conn) == at_0009
        assert conn.dialect.has_table(conn, "deletion_feed_sweeps") is True
    migrate_data(owner, "head")
    with owner.connect() as conn:
        assert _stored(conn) == at_head  # 0012 (down and up again) changed the feed's index and no-replace trigger back and forth
    with write_transaction(runtime.data_engine) as conn:
        conn.execute(insert(deletion_feed).values(**_feed_row("cc" * 16, "stale")))
    with pytest.raises(IntegrityError), write_transaction(runtime.data_engine) as conn:
        conn.execute(insert(deletion_feed).values(**_feed_row("dd" * 16, "lapsed")))
    with runtime.data_engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(select(deletion_feed.c.seq, deletion_feed.c.pseudonym, deletion_feed.c.reason).order_by(deletion_feed.c.seq))]
        assert [r[1:] for r in rows] == [("bb" * 16, "withdrawn"), ("cc" * 16, "stale")]
        assert rows[0][0] == kept < rows[1][0]
        if conn.dialect.name == "postgresql":
            assert _app_rights(conn, "deletion_feed") == set()
    for engine in (runtime.data_engine, owner):
        with pytest.raises(DBAPIError) as refused, engine.begin() as conn:
            conn.execute(text("UPDATE deletion_feed SET reason = 'erased'"))
        if engine is owner or engine.dialect.name == "sqlite":  # the application role on PostgreSQL has no UPDATE right to begin with
            assert "extract membership and the deletion feed are append-only" in str(refused.value)


def test_downgrade_of_an_empty_feed_drops_the_sweeps_table_and_the_old_check_refuses_stale(runtime: Runtime, owner: Engine, consumer: None) -> None:
    migrate_data(owner, BEFORE, down=True)

    with owner.connect() as conn:
        assert conn.dialect.has_table(conn, "deletion_feed_sweeps") is False
        if conn.dialect.name == "postgresql":
            assert conn.exec_driver_sql("SELECT count(*) FROM pg_proc WHERE proname = 'deletion_feed_sweeps_append_only'").scalar_one() == 0
            triggers = conn.exec_driver_sql("SELECT tgname FROM pg_trigger WHERE tgrelid = 'deletion_feed'::regclass AND NOT tgisinternal ORDER BY 1")
            assert [str(t) for t in triggers.scalars()] == FEED_TRIGGERS_PG
    with pytest.raises(IntegrityError), write_transaction(runtime.data_engine) as conn:
        conn.execute(insert(deletion_feed).values(**_feed_row("aa" * 16, "stale")))


def _sweep_row(conn: Connection) -> None:
    conn.execute(insert(deletion_feed_sweeps).values(purpose="loyalty_profiling", notice_version=1, stale_at=NOW, swept_at=NOW))


def _sweeps(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(deletion_feed_sweeps))]


@pytest.mark.parametrize("statement", ["UPDATE deletion_feed_sweeps SET swept_at = stale_at", "DELETE FROM deletion_feed_sweeps"])
def test_sweeps_cannot_be_changed_or_deleted_by_the_app_or_the_owner(runtime: Runtime, owner: Engine, statement: str) -> None:
    with write_transaction(runtime.data_engine) as conn:
        _sweep_row(conn)
    before = _sweeps(runtime.data_engine)

    for engine in (runtime.data_engine, owner):
        with pytest.raises(DBAPIError) as refused, engine.begin() as conn:
            conn.execute(text(statement))
        if engine is owner or engine.dialect.name == "sqlite":
            assert SWEEPS_MESSAGE in str(refused.value)

    assert _sweeps(runtime.data_engine) == before == [("loyalty_profiling", 1, NOW, NOW)]


def test_a_sweep_cannot_be_replaced_or_recorded_twice(runtime: Runtime) -> None:
    with write_transaction(runtime.data_engine) as conn:
        _sweep_row(conn)
    before = _sweeps(runtime.data_engine)

    with pytest.raises(IntegrityError), write_transaction(runtime.data_engine) as conn:
        _sweep_row(conn)
    if runtime.data_engine.dialect.name == "sqlite":
        with pytest.raises(DBAPIError, match=SWEEPS_MESSAGE), runtime.data_engine.begin() as conn:
            conn.execute(text("INSERT OR REPLACE INTO deletion_feed_sweeps SELECT purpose, notice_version, stale_at, stale_at FROM deletion_feed_sweeps"))

    assert _sweeps(runtime.data_engine) == before


@pytest.mark.parametrize("backend", ["postgres"])
def test_postgres_refuses_truncating_sweeps_for_every_role_and_the_app_holds_no_right_to_change_them(runtime: Runtime, owner: Engine) -> None:
    with write_transaction(runtime.data_engine) as conn:
        _sweep_row(conn)
        assert _app_rights(conn, "deletion_feed_sweeps") == set()
    for engine in (runtime.data_engine, owner):
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(text("TRUNCATE deletion_feed_sweeps CASCADE"))
    assert len(_sweeps(runtime.data_engine)) == 1


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_sweeps_keep_no_update_no_delete_and_no_replace_triggers(runtime: Runtime) -> None:
    with runtime.data_engine.connect() as conn:
        triggers = {
            str(n) for n in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'deletion_feed_sweeps'").scalars()
        }
    assert triggers == {"deletion_feed_sweeps_no_update", "deletion_feed_sweeps_no_delete", "deletion_feed_sweeps_no_replace"}
