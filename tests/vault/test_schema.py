"""The migrated schema on real SQLite and PostgreSQL: matches the metadata and the data map, refuses what it must."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, LargeBinary, MetaData, inspect
from sqlalchemy.exc import ProgrammingError

import audit.checkpoints
import audit.store
import vault.storage.schema
from api.runtime import Runtime, open_runtime
from api.settings import Settings
from keys.models import KeystoreBase
from vault import data_map as dm
from vault.errors import SchemaNotReadyError
from vault.storage.engine import make_engine
from vault.storage.migrate import Database, head, require_current

STRUCTURAL = {
    dm.Table.members: {"member_id", "key_version", "created_at", "updated_at", "erased_at"},
    dm.Table.treatments: {"treatment_id", "member_id", "retention_year", "created_at"},
    dm.Table.ledger_entries: {"entry_id", "member_id", "seq", "key_version", "created_at"},
}


def _diff(engine: Engine, metadata: MetaData | Sequence[MetaData]) -> list[object]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def test_migrated_data_database_matches_the_schema_metadata(runtime: Runtime) -> None:
    assert _diff(runtime.data_engine, [vault.storage.schema.metadata, audit.store.metadata, audit.checkpoints.metadata]) == []


def test_migrated_key_store_matches_its_models(runtime: Runtime) -> None:
    assert _diff(runtime.keys_engine, KeystoreBase.metadata) == []


@pytest.mark.parametrize("table", list(dm.Table))
def test_every_data_map_field_has_exactly_one_column_and_encrypted_fields_are_binary(runtime: Runtime, table: dm.Table) -> None:
    columns = inspect(runtime.data_engine).get_columns(table.value)
    names = [c["name"] for c in columns]
    fields = dm.fields_of(table)
    assert sorted(names) == sorted(STRUCTURAL[table] | {f.name for f in fields})
    assert len(names) == len(set(names))
    by_name = {c["name"]: c for c in columns}
    for f in fields:
        column = by_name[f.name]
        assert isinstance(column["type"], LargeBinary) is f.encrypted, f.qualified_name
        assert column["nullable"] is (f.encrypted or not f.required), f.qualified_name


def test_no_plain_column_of_a_member_holds_an_encrypted_field(runtime: Runtime) -> None:
    """Every binary column of ``members`` is an encrypted data-map field, and every plain one is declared plain."""
    columns = inspect(runtime.data_engine).get_columns("members")
    binary = {c["name"] for c in columns if isinstance(c["type"], LargeBinary)}
    assert binary == {f.name for f in dm.fields_of(dm.Table.members) if f.encrypted}


def test_the_databases_are_at_the_head_revisions(runtime: Runtime) -> None:
    require_current(runtime.data_engine, Database.data)
    require_current(runtime.keys_engine, Database.keystore)
    with pytest.raises(SchemaNotReadyError):
        require_current(runtime.data_engine, Database.keystore)
    with pytest.raises(SchemaNotReadyError):
        require_current(runtime.keys_engine, Database.data)
    assert head(Database.data) != head(Database.keystore)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_empty_sqlite_database_is_not_ready_and_the_runtime_refuses_it(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    engine = make_engine(f"sqlite:///{empty}")
    try:
        with pytest.raises(SchemaNotReadyError):
            require_current(engine, Database.data)
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
    with pytest.raises(SchemaNotReadyError):
        open_runtime(make_settings(database_url=f"sqlite:///{empty}"))
    with pytest.raises(SchemaNotReadyError):
        open_runtime(make_settings(keystore_url=f"sqlite:///{tmp_path / 'empty-keys.db'}"))


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("which", ["data", "keys"])
def test_sqlite_connections_are_durable_and_safe(runtime: Runtime, which: str) -> None:
    engine = runtime.data_engine if which == "data" else runtime.keys_engine
    with engine.connect() as conn:
        pragmas = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in ("journal_mode", "synchronous", "foreign_keys", "secure_delete")}
    assert pragmas == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "secure_delete": 1}


@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("which", ["data", "keys"])
@pytest.mark.parametrize(
    "statement",
    ["CREATE TABLE smuggled (x integer)", "DROP TABLE {table}", "ALTER TABLE {table} ADD COLUMN smuggled text", "TRUNCATE {table}"],
)
def test_postgres_application_role_cannot_change_the_schema(runtime: Runtime, which: str, statement: str) -> None:
    engine, table = (runtime.data_engine, "members") if which == "data" else (runtime.keys_engine, "member_keys")
    with engine.connect() as conn, pytest.raises(ProgrammingError) as caught:
        conn.exec_driver_sql(statement.format(table=table))
    assert caught.value.orig.sqlstate == "42501"  # type: ignore[union-attr]  # insufficient_privilege
    assert table in inspect(engine).get_table_names()
    assert "smuggled" not in inspect(engine).get_table_names()
