"""Fail-closed: when the audit append fails, the data write in the same transaction rolls back and a read returns nothing.

The append is made to fail for real — a held lock with a short timeout, a
revoked INSERT, a full database — and must fail within that timeout, not hang.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import Connection, Engine, create_engine, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from api.runtime import Runtime
from audit.store import AuditJournal, AuditStoreError, audit_journal
from tests.audit.factories import sample_event
from vault.storage.engine import make_engine
from vault.storage.schema import members

NOW = datetime(2026, 11, 22, 16, 0, tzinfo=UTC)
BOUND_S = 3.0  # far above every timeout set here (0.1–0.2 s), far below a hang


def _write_member(conn: Connection, member_id: str, *, fields: tuple[str, ...] = ("tier",)) -> None:
    """A data write and its audit event, in the caller's transaction: the shape of every audited write."""
    conn.execute(
        insert(members).values(
            member_id=member_id,
            key_version=1,
            created_at=NOW,
            updated_at=NOW,
            tier="gold",
            status="active",
            joined_at=date(2026, 1, 1),
            home_clinic_id="sh-001",
        )
    )
    AuditJournal().append(conn, sample_event(1, action="create", member_id=member_id, fields=fields))


def _write_in_own_transaction(engine: Engine, member_id: str) -> None:
    with engine.begin() as conn:
        _write_member(conn, member_id)


def _read_member(conn: Connection, member_id: str) -> object:
    """A read and its audit event: the row is handed out only once the event is journaled."""
    row = conn.execute(select(members.c.tier).where(members.c.member_id == member_id)).one()
    AuditJournal().append(conn, sample_event(2, member_id=member_id))
    return row


def _present(engine: Engine, member_id: str) -> tuple[bool, int]:
    """Whether the member exists, and how many journal entries there are."""
    with engine.connect() as conn:
        found = conn.execute(select(members.c.member_id).where(members.c.member_id == member_id)).first() is not None
        return found, conn.execute(select(func.count()).select_from(audit_journal)).scalar_one()


@contextmanager
def _bounded(cause: str) -> Iterator[None]:
    """The block fails with ``AuditStoreError`` caused by ``cause`` (a SQLSTATE, or SQLite's message), within ``BOUND_S``."""
    started = time.monotonic()
    with pytest.raises(AuditStoreError, match="the audit journal could not be written") as caught:
        yield
    assert time.monotonic() - started < BOUND_S
    origin = caught.value.__cause__
    assert isinstance(origin, DBAPIError)
    assert cause in (str(getattr(origin.orig, "sqlstate", None)), str(origin.orig))


def test_a_write_and_its_event_commit_together(engine: Engine) -> None:
    with engine.begin() as conn:
        _write_member(conn, "m-ok")
    assert _present(engine, "m-ok") == (True, 1)


# -- SQLite ------------------------------------------------------------------------


@pytest.fixture
def sqlite_path(runtime: Runtime) -> str:
    return str(make_url(runtime.settings.data_url).database)


@pytest.fixture
def impatient(sqlite_path: str) -> Iterator[Engine]:
    """The data database through an engine whose connections wait at most 100 ms for a lock."""
    engine = make_engine(f"sqlite:///{sqlite_path}")
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA busy_timeout = 100")  # the pool keeps this one connection
        conn.commit()
    yield engine
    engine.dispose()


@contextmanager
def _sqlite_write_lock(path: str) -> Iterator[None]:
    with closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_full_database_rolls_back_the_write_when_the_event_cannot_be_stored(engine: Engine, sqlite_path: str) -> None:
    with closing(sqlite3.connect(sqlite_path, isolation_level=None)) as raw:
        raw.execute("VACUUM")  # no free pages: the event below needs new ones
    wide = tuple(f"field_{i:03d}_" + "x" * 50 for i in range(256))  # ~16 KB of leaf: overflow pages
    with engine.connect() as conn:
        with _bounded("database or disk is full"), conn.begin():
            _write_member(conn, "m-full-1", fields=("tier",))
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
            conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")  # the disk is now full
            _write_member(conn, "m-full-2", fields=wide)
        conn.invalidate()  # do not pool a connection with a page limit
    assert _present(engine, "m-full-1") == (False, 0)
    assert _present(engine, "m-full-2") == (False, 0)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_held_write_lock_fails_a_read_promptly_and_returns_nothing(engine: Engine, impatient: Engine, sqlite_path: str) -> None:
    with engine.begin() as conn:
        _write_member(conn, "m-locked")
    returned: list[object] = []
    with _sqlite_write_lock(sqlite_path), _bounded("database is locked"), impatient.begin() as conn:
        returned.append(_read_member(conn, "m-locked"))
    assert returned == []
    assert _present(engine, "m-locked") == (True, 1)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_held_write_lock_fails_a_write_promptly_and_leaves_nothing(engine: Engine, impatient: Engine, sqlite_path: str) -> None:
    with _sqlite_write_lock(sqlite_path), pytest.raises(OperationalError, match="database is locked"):
        _write_in_own_transaction(impatient, "m-locked")  # the data write is the first to meet the lock
    assert _present(engine, "m-locked") == (False, 0)


# -- PostgreSQL ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres"])
def test_postgres_revoked_insert_rolls_back_the_write(engine: Engine, owner_sql: Callable[[str], None]) -> None:
    owner_sql("REVOKE INSERT ON audit_journal FROM vault_app")
    with _bounded("42501"), engine.begin() as conn:
        _write_member(conn, "m-revoked")
    assert _present(engine, "m-revoked") == (False, 0)


@pytest.mark.parametrize("backend", ["postgres"])
def test_postgres_revoked_insert_fails_a_read_and_returns_nothing(engine: Engine, owner_sql: Callable[[str], None]) -> None:
    with engine.begin() as conn:
        _write_member(conn, "m-revoked")
    owner_sql("REVOKE INSERT ON audit_journal FROM vault_app")
    returned: list[object] = []
    with _bounded("42501"), engine.begin() as conn:
        returned.append(_read_member(conn, "m-revoked"))
    assert returned == []
    assert _present(engine, "m-revoked") == (True, 1)


@pytest.mark.parametrize("backend", ["postgres"])
def test_postgres_locked_journal_rolls_back_the_write_within_the_lock_timeout(engine: Engine, runtime: Runtime, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("pg_server")
    admin = create_engine(make_url(server.admin_url).set(database=make_url(runtime.settings.data_url).database))
    try:
        with admin.connect() as holder:
            holder.execute(text("LOCK TABLE audit_journal IN ACCESS EXCLUSIVE MODE"))
            with _bounded("55P03"), engine.begin() as conn:  # lock_not_available
                conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
                _write_member(conn, "m-locked")
            holder.rollback()
    finally:
        admin.dispose()
    assert _present(engine, "m-locked") == (False, 0)
