"""The consent history and the notice versions refuse changes at the database level, as the audit tables do.

On SQLite the triggers refuse UPDATE, DELETE and INSERT OR REPLACE for every
connection; on PostgreSQL the application role lacks the rights (42501) and
even the owner role meets the triggers (P0001), TRUNCATE included.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError

from api.runtime import Runtime
from tests.vault.factories import other_member_values
from vault.consent.model import ConsentChannel, ConsentDecision, ConsentRequest, Recorder, RecorderRole
from vault.consent.notices import NoticeBook
from vault.consent.service import ConsentService
from vault.ids import new_id
from vault.purposes import Purpose
from vault.storage.engine import write_transaction
from vault.storage.schema import consent_events, consent_notices

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
MESSAGE = "consent history is append-only"
TABLES = ("consent_events", "consent_notices")
CHANGES = {
    "consent_events": {
        "update": "UPDATE consent_events SET decision = 'withdrawn', notice_version = NULL, notice_hash = NULL",
        "delete": "DELETE FROM consent_events",
    },
    "consent_notices": {
        "update": "UPDATE consent_notices SET text_en = 'We may do anything.' WHERE purpose = 'marketing_contact'",
        "delete": "DELETE FROM consent_notices WHERE version = 1",
    },
}
# Re-insert an existing row under its key: SQLite's REPLACE would delete the old row without firing a delete trigger.
REPLACE = {
    "consent_events": "INSERT OR REPLACE INTO consent_events SELECT * FROM consent_events ORDER BY seq LIMIT 1",
    "consent_notices": "INSERT OR REPLACE INTO consent_notices SELECT * FROM consent_notices WHERE purpose = 'care'",
}
REUSED_ID = (
    "INSERT OR REPLACE INTO consent_events SELECT seq + 100, consent_id, member_id, purpose, 'granted', 1, notice_hash, channel, given_by, "
    "evidence, recorded_by, recorded_role, request_id, recorded_at FROM consent_events WHERE decision = 'withdrawn'"
)
UPSERT = {
    "consent_events": (
        "INSERT INTO consent_events OVERRIDING SYSTEM VALUE SELECT * FROM consent_events ORDER BY seq LIMIT 1 "
        "ON CONFLICT (seq) DO UPDATE SET decision = 'withdrawn', notice_version = NULL, notice_hash = NULL"
    ),
    "consent_notices": (
        "INSERT INTO consent_notices SELECT * FROM consent_notices WHERE purpose = 'care' "
        "ON CONFLICT (purpose, version) DO UPDATE SET text_en = 'We may do anything.'"
    ),
}


def _statement(table: str, kind: str) -> str:
    return {**CHANGES[table], "replace": REPLACE[table], "upsert": UPSERT[table], "truncate": f"TRUNCATE {table}"}[kind]


def _snapshot(engine: Engine) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with engine.connect() as conn:
        events = [tuple(r) for r in conn.execute(select(consent_events).order_by(consent_events.c.seq))]
        notices = [tuple(r) for r in conn.execute(select(consent_notices).order_by(consent_notices.c.purpose, consent_notices.c.version))]
    return events, notices


@pytest.fixture
def history(runtime: Runtime) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """A member's grant (app) and withdrawal (paper, with evidence) and a second marketing notice; the tables' rows."""
    service = ConsentService(runtime.members, NoticeBook())
    with write_transaction(runtime.data_engine) as conn:
        member_id = runtime.members.create(conn, other_member_values(1))
        grant = ConsentRequest(Purpose.marketing_contact, ConsentDecision.granted, ConsentChannel.app, notice_version=1)
        service.record(conn, member_id, grant, Recorder("member:self", RecorderRole.member), consent_id=new_id(), request_id="r1", now=NOW)
        withdrawal = ConsentRequest(Purpose.marketing_contact, ConsentDecision.withdrawn, ConsentChannel.paper, evidence="scan-0601-1")
        later = NOW + timedelta(hours=1)
        service.record(conn, member_id, withdrawal, Recorder("staff:fd-1", RecorderRole.front_desk), consent_id=new_id(), request_id="r2", now=later)
        service.notices.publish(
            conn, Purpose.marketing_contact, 2, text_zh="第二版", text_en="version 2", material=True, effective_at=later, published_by="staff:dpo-1", now=later
        )
    snapshot = _snapshot(runtime.data_engine)
    assert (len(snapshot[0]), len(snapshot[1])) == (2, len(Purpose) + 1)
    return snapshot


@pytest.fixture
def raw_sqlite(runtime: Runtime) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the test's data database, outside the vault's engine."""
    with closing(sqlite3.connect(str(make_url(runtime.settings.data_url).database), isolation_level=None)) as raw:
        yield raw


def _sqlstate(error: DBAPIError) -> str:
    return str(getattr(error.orig, "sqlstate", ""))


# -- SQLite: the triggers refuse every connection --------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("kind", ["update", "delete", "replace"])
def test_sqlite_triggers_refuse_changing_a_consent_row(
    runtime: Runtime, history: tuple[list[tuple[object, ...]], ...], raw_sqlite: sqlite3.Connection, table: str, kind: str
) -> None:
    statement = _statement(table, kind)
    with pytest.raises(IntegrityError, match=MESSAGE), runtime.data_engine.begin() as conn:
        conn.execute(text(statement))
    with pytest.raises(sqlite3.IntegrityError, match=MESSAGE):
        raw_sqlite.execute(statement)
    assert _snapshot(runtime.data_engine) == history


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_refuses_replacing_an_event_through_its_consent_id(runtime: Runtime, history: tuple[list[tuple[object, ...]], ...]) -> None:
    """INSERT OR REPLACE under a new seq but an existing consent id would delete the old row through the unique index."""
    with pytest.raises(IntegrityError, match=MESSAGE), runtime.data_engine.begin() as conn:
        conn.execute(text(REUSED_ID))
    assert _snapshot(runtime.data_engine) == history


# -- PostgreSQL: no rights for the application role, triggers for the owner ---------------------------


@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("kind", ["update", "delete", "truncate", "upsert"])
def test_postgres_application_role_may_not_change_a_consent_row(runtime: Runtime, history: tuple[list[tuple[object, ...]], ...], kind: str) -> None:
    for table in TABLES:
        with pytest.raises(ProgrammingError) as caught, runtime.data_engine.begin() as conn:
            conn.execute(text(_statement(table, kind)))
        assert _sqlstate(caught.value) == "42501", table  # insufficient_privilege
        assert f"permission denied for table {table}" in str(caught.value.orig)
    assert _snapshot(runtime.data_engine) == history


@pytest.mark.parametrize("backend", ["postgres"])
def test_postgres_application_role_holds_only_select_and_insert(runtime: Runtime, history: tuple[list[tuple[object, ...]], ...]) -> None:
    rights = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    with runtime.data_engine.connect() as conn:
        held = {t: [r for r in rights if conn.execute(text("SELECT has_table_privilege(:t, :r)"), {"t": t, "r": r}).scalar_one()] for t in TABLES}
        sequence = conn.execute(text("SELECT pg_get_serial_sequence('consent_events', 'seq')")).scalar_one()
        has = text("SELECT has_sequence_privilege(:s, :r)")
        on_sequence = [r for r in ("USAGE", "SELECT", "UPDATE") if conn.execute(has, {"s": sequence, "r": r}).scalar_one()]
    assert held == {t: ["SELECT", "INSERT"] for t in TABLES}
    assert on_sequence == ["USAGE", "SELECT"]
    for table in TABLES:
        with pytest.raises(ProgrammingError) as caught, runtime.data_engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        assert _sqlstate(caught.value) == "42501", table  # must be owner
    assert _snapshot(runtime.data_engine) == history


@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("kind", ["update", "delete", "truncate", "upsert"])
def test_postgres_triggers_refuse_even_the_owner_role(runtime: Runtime, history: tuple[list[tuple[object, ...]], ...], owner: Engine, kind: str) -> None:
    with owner.connect() as conn:
        owned = {t: conn.execute(text("SELECT current_user = tableowner FROM pg_tables WHERE tablename = :t"), {"t": t}).scalar_one() for t in TABLES}
    assert owned == dict.fromkeys(TABLES, True)
    for table in TABLES:
        with pytest.raises(DBAPIError, match=MESSAGE) as caught, owner.begin() as conn:
            conn.execute(text(_statement(table, kind)))
        assert _sqlstate(caught.value) == "P0001", table  # raise_exception, from the trigger
    assert _snapshot(runtime.data_engine) == history
