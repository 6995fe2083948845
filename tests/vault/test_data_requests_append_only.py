"""A data-subject request's steps are append-only and a request is never deleted, at the database level.

``data_request_steps`` refuses UPDATE, DELETE and INSERT OR REPLACE on SQLite
for every connection; on PostgreSQL the application role lacks the rights
(42501) and even the owner role meets the triggers (P0001), TRUNCATE included.
``data_requests`` moves its status (UPDATE is allowed to the application) but
refuses DELETE, REPLACE and TRUNCATE the same ways.
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
from vault.data_requests import DataRequestService, FiledBy, Filer, Filing, ReasonCode, RequestType, Status
from vault.ids import new_id
from vault.storage.engine import write_transaction
from vault.storage.schema import data_request_steps, data_requests

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
MESSAGE = "data-subject request history is append-only"
STEPS = "data_request_steps"
REQUESTS = "data_requests"
Snapshot = tuple[list[tuple[object, ...]], list[tuple[object, ...]]]

STATEMENTS = {
    STEPS: {
        "update": "UPDATE data_request_steps SET reason_code = 'excessive', note = NULL",
        "delete": "DELETE FROM data_request_steps WHERE seq = 2",
        # Re-insert an existing row under its key: SQLite's REPLACE would delete the old row without firing a delete trigger.
        "replace": "INSERT OR REPLACE INTO data_request_steps SELECT * FROM data_request_steps WHERE seq = 2",
        "upsert": "INSERT INTO data_request_steps SELECT * FROM data_request_steps WHERE seq = 2 ON CONFLICT (step_id) DO UPDATE SET reason_code = 'excessive'",
        "truncate": "TRUNCATE data_request_steps",
    },
    REQUESTS: {
        "delete": "DELETE FROM data_requests",
        "replace": "INSERT OR REPLACE INTO data_requests SELECT * FROM data_requests WHERE status = 'received'",
        "truncate": "TRUNCATE data_requests CASCADE",
    },
}
# A new step id but an existing (dsr_id, seq): REPLACE would delete the old step through the unique constraint.
REUSED_SEQ = (
    "INSERT OR REPLACE INTO data_request_steps SELECT lower(hex(randomblob(16))), dsr_id, seq, from_status, 'rejected', actor, actor_role, "
    "'excessive', NULL, at FROM data_request_steps WHERE seq = 2"
)
# A new request id but the same member and type while open: REPLACE would delete the open request through the partial unique index.
REUSED_OPEN_TYPE = (
    "INSERT OR REPLACE INTO data_requests SELECT lower(hex(randomblob(16))), member_id, type, status, jurisdiction, filed_by, filed_role, "
    "details, evidence, settlement_entry_id, received_at, due_at, updated_at, closed_at FROM data_requests WHERE status = 'received'"
)
MOVE_STATUS = "UPDATE data_requests SET status = 'verified' WHERE status = 'received'"


def _snapshot(engine: Engine) -> Snapshot:
    with engine.connect() as conn:
        requests = [tuple(r) for r in conn.execute(select(data_requests).order_by(data_requests.c.dsr_id))]
        steps = [tuple(r) for r in conn.execute(select(data_request_steps).order_by(data_request_steps.c.dsr_id, data_request_steps.c.seq))]
    return requests, steps


@pytest.fixture
def history(runtime: Runtime) -> Snapshot:
    """An objection filed by the front desk, verified and in progress (a note on a step); an access request just received."""
    service = DataRequestService(runtime.members, periods={"default": "P1M"})
    with write_transaction(runtime.data_engine) as conn:
        member_id = runtime.members.create(conn, other_member_values(1))
        objection = Filing(RequestType.objection, details={"purposes": ["marketing_contact"]}, evidence="scan-0601-1")
        filed = service.file(conn, member_id, objection, Filer("staff:fd-1", FiledBy.front_desk), dsr_id=new_id(), now=NOW)
        for i, to in enumerate((Status.verified, Status.in_progress)):
            later = NOW + timedelta(hours=i + 1)
            service.transition(conn, filed.dsr_id, to, actor="staff:dpo-1", actor_role="dpo", reason=None, note="called back", now=later)
        service.file(conn, member_id, Filing(RequestType.access), Filer("member-subject", FiledBy.member), dsr_id=new_id(), now=NOW)
    snapshot = _snapshot(runtime.data_engine)
    assert [r[3] for r in snapshot[0]].count("received") == 1
    assert (len(snapshot[0]), len(snapshot[1])) == (2, 4)
    assert sorted(s[7] for s in snapshot[1]) == sorted([ReasonCode.filed, ReasonCode.filed, ReasonCode.identity_verified, ReasonCode.work_started])
    return snapshot


@pytest.fixture
def raw_sqlite(runtime: Runtime) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the test's data database, outside the vault's engine (foreign keys off, sqlite3's default)."""
    with closing(sqlite3.connect(str(make_url(runtime.settings.data_url).database), isolation_level=None)) as raw:
        yield raw


def _sqlstate(error: DBAPIError) -> str:
    return str(getattr(error.orig, "sqlstate", ""))


def _status_moves(engine: Engine, before: Snapshot) -> None:
    """UPDATE of a request's status goes through; the steps stay as they were."""
    with engine.begin() as conn:
        assert conn.execute(text(MOVE_STATUS)).rowcount == 1
    requests, steps = _snapshot(engine)
    assert steps == before[1]
    assert sorted(r[3] for r in requests) == sorted(["verified", "in_progress"])


# -- SQLite: the triggers refuse every connection --------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(("table", "kind"), [(STEPS, "update"), (STEPS, "delete"), (STEPS, "replace"), (REQUESTS, "delete"), (REQUESTS, "replace")])
def test_sqlite_triggers_refuse_changing_a_step_or_deleting_a_request(
    runtime: Runtime, history: Snapshot, raw_sqlite: sqlite3.Connection, table: str, kind: str
) -> None:
    statement = STATEMENTS[table][kind]
    with pytest.raises(IntegrityError, match=MESSAGE), runtime.data_engine.begin() as conn:
        conn.execute(text(statement))
    with pytest.raises(sqlite3.IntegrityError, match=MESSAGE):
        raw_sqlite.execute(statement)
    assert _snapshot(runtime.data_engine) == history


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_refuses_replacing_a_step_through_its_request_and_seq(runtime: Runtime, history: Snapshot, raw_sqlite: sqlite3.Connection) -> None:
    """INSERT OR REPLACE under a new step id but an existing (dsr_id, seq) would delete the old step through the unique constraint."""
    with pytest.raises(IntegrityError, match=MESSAGE), runtime.data_engine.begin() as conn:
        conn.execute(text(REUSED_SEQ))
    with pytest.raises(sqlite3.IntegrityError, match=MESSAGE):
        raw_sqlite.execute(REUSED_SEQ)
    assert _snapshot(runtime.data_engine) == history


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_refuses_replacing_an_open_request_through_its_member_and_type(runtime: Runtime, history: Snapshot, raw_sqlite: sqlite3.Connection) -> None:
    """INSERT OR REPLACE under a new request id but the same open member and type would delete the open request through the partial unique index.

    The vault's own connections have foreign keys on, which happen to refuse it too (the request has steps); a plain connection does not.
    """
    with pytest.raises(IntegrityError, match=MESSAGE), runtime.data_engine.begin() as conn:
        conn.execute(text(REUSED_OPEN_TYPE))
    with pytest.raises(sqlite3.IntegrityError, match=MESSAGE):
        raw_sqlite.execute(REUSED_OPEN_TYPE)
    assert _snapshot(runtime.data_engine) == history


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_lets_a_requests_status_move(runtime: Runtime, history: Snapshot) -> None:
    _status_moves(runtime.data_engine, history)


# -- PostgreSQL: no rights for the application role, triggers for the owner ---------------------------


@pytest.mark.parametrize("backend", ["postgres"])
def test_postgres_application_role_may_not_change_a_step_or_delete_a_request(runtime: Runtime, history: Snapshot) -> None:
    cases = [(STEPS, k) for k in ("update", "delete", "truncate", "upsert")] + [(REQUESTS, k) for k in ("delete", "truncate")]
    for table, kind in cases:
        with pytest.raises(ProgrammingError) as caught, runtime.data_engine.begin() as conn:
            conn.execute(text(STATEMENTS[table][kind]))
        assert _sqlstate(caught.value) == "42501", (table, kind)  # insufficient_privilege
        assert f"permission denied for table {table}" in str(caught.value.orig)
    assert _snapshot(runtime.data_engine) == history


@pytest.mark.parametrize("backend", ["postgres"])
def test_postgres_application_role_holds_only_the_rights_it_needs(runtime: Runtime, history: Snapshot) -> None:
    rights = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    with runtime.data_engine.connect() as conn:
        held = {t: [r for r in rights if conn.execute(text("SELECT has_table_privilege(:t, :r)"), {"t": t, "r": r}).scalar_one()] for t in (STEPS, REQUESTS)}
    assert held == {STEPS: ["SELECT", "INSERT"], REQUESTS: ["SELECT", "INSERT", "UPDATE"]}
    for table in (STEPS, REQUESTS):
        with pytest.raises(ProgrammingError) as caught, runtime.data_engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        assert _sqlstate(caught.value) == "42501", table  # must be owner
    assert _snapshot(runtime.data_engine) == history


@pytest.mark.parametrize("backend", ["postgres"])
def test_postgres_triggers_refuse_even_the_owner_role(runtime: Runtime, history: Snapshot, owner: Engine) -> None:
    with owner.connect() as conn:
        owned = {
            t: conn.execute(text("SELECT current_user = tableowner FROM pg_tables WHERE tablename = :t"), {"t": t}).scalar_one() for t in (STEPS, REQUESTS)
        }
    assert owned == {STEPS: True, REQUESTS: True}
    cases = [(STEPS, k) for k in ("update", "delete", "truncate", "upsert")] + [(REQUESTS, k) for k in ("delete", "truncate")]
    for table, kind in cases:
        with pytest.raises(DBAPIError, match=MESSAGE) as caught, owner.begin() as conn:
            conn.execute(text(STATEMENTS[table][kind]))
        assert _sqlstate(caught.value) == "P0001", (table, kind)  # raise_exception, from the trigger
    assert _snapshot(runtime.data_engine) == history


@pytest.mark.parametrize("backend", ["postgres"])
def test_postgres_application_role_moves_a_requests_status(runtime: Runtime, history: Snapshot) -> None:
    _status_moves(runtime.data_engine, history)
