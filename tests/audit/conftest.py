"""Fixtures for the audit store tests: write events through the real journal, sequence them, reach the database as its owner."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from api.runtime import Runtime
from audit.event import AuditEvent
from audit.sequencer import Sequencer
from audit.store import AuditJournal

WriteEvents = Callable[[Sequence[AuditEvent]], list[int]]


@pytest.fixture
def engine(runtime: Runtime) -> Engine:
    """The data database, reached as the application (on PostgreSQL the application role)."""
    return runtime.data_engine


@pytest.fixture
def write_events(engine: Engine) -> WriteEvents:
    """Append events through ``AuditJournal.append``, each in its own transaction; return their journal ids."""
    journal = AuditJournal()

    def write(events: Sequence[AuditEvent]) -> list[int]:
        ids = []
        for event in events:
            with engine.begin() as conn:
                ids.append(journal.append(conn, event))
        return ids

    return write


@pytest.fixture
def sequence_all(engine: Engine) -> Callable[[], int]:
    """Run one ``Sequencer`` until nothing waits; return how many entries it sequenced."""
    sequencer = Sequencer(engine)

    return sequencer.run_until_idle


@pytest.fixture
def owner_sql(runtime: Runtime, backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[[str], None]]:
    """Run SQL with full rights on the test's data database: the PostgreSQL superuser, or a plain sqlite3 connection."""
    url = make_url(runtime.settings.data_url)
    if backend == "postgres":
        server = request.getfixturevalue("pg_server")
        yield lambda sql: server.admin(sql, database=str(url.database))
        return
    with closing(sqlite3.connect(str(url.database), isolation_level=None)) as raw:

        def run(sql: str) -> None:
            raw.execute(sql)

        yield run


@pytest.fixture
def forge_leaf(owner_sql: Callable[[str], None], backend: str) -> Callable[[int, bytes], None]:
    """As an administrator: drop the journal's update trigger and overwrite one sequenced leaf's bytes."""

    def forge(index: int, leaf: bytes) -> None:
        if backend == "postgres":
            owner_sql("DROP TRIGGER audit_journal_append_only ON audit_journal")
            literal = f"decode('{leaf.hex()}', 'hex')"
        else:
            owner_sql("DROP TRIGGER audit_journal_no_update")
            literal = f"X'{leaf.hex()}'"
        owner_sql(f"UPDATE audit_journal SET leaf = {literal} WHERE journal_id = (SELECT journal_id FROM audit_leaves WHERE leaf_index = {index})")

    return forge


@pytest.fixture
def poison_trigger(owner_sql: Callable[[str], None], backend: str) -> str:
    """As the database owner: refuse any journal insert whose actor subject is ``poison`` (a real database error)."""
    if backend == "postgres":
        owner_sql(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN IF NEW.actor_subject = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$"
        )
        owner_sql("CREATE TRIGGER poison BEFORE INSERT ON audit_journal FOR EACH ROW EXECUTE FUNCTION poison()")
    else:
        owner_sql("CREATE TRIGGER poison BEFORE INSERT ON audit_journal WHEN NEW.actor_subject = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END")
    return "poison"
