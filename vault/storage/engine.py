"""Database engines with the vault's durability and safety settings.

SQLite (the embedded default), on every connection: WAL journal,
``synchronous=FULL`` (an acknowledged commit survives power loss),
``foreign_keys=ON``, ``secure_delete=ON`` (freed pages are zeroed, so a
shredded key does not linger in the file), a busy timeout. pysqlite's own
transaction handling is switched off and SQLAlchemy emits ``BEGIN`` itself, as
SQLAlchemy documents, so savepoints work; a transaction that will write is
opened with ``write_transaction`` (``BEGIN IMMEDIATE``).

Writers of one engine take a process-wide lock before ``BEGIN IMMEDIATE``
and release it when the transaction ends (the DBAPI connection's ``commit``
or ``rollback``). SQLite's busy handler waits by sleeping in growing steps
(up to 100 ms) however soon the lock frees; threads queued on a Python lock
are woken at once. Across processes the busy handler still arbitrates.

PostgreSQL through psycopg 3: ``pool_pre_ping`` and a connect timeout, so a
database that went away fails fast instead of hanging.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 5000
# Execution option: begin this connection's transactions with BEGIN IMMEDIATE (keys/ uses the same name).
SQLITE_IMMEDIATE = "sqlite_immediate"


class _SerializedWriters(sqlite3.Connection):
    """A pysqlite connection whose write transactions queue on its engine's lock (set on a per-engine subclass)."""

    write_lock: threading.Lock
    _holding = False

    def begin_immediate(self) -> None:
        if not self.write_lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise sqlite3.OperationalError("database is locked")
        self._holding = True
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if self._holding:
            self._holding = False
            self.write_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release()

    def close(self) -> None:
        """An invalidated or collected connection is closed, not rolled back: its lock must not outlive it."""
        try:
            super().close()
        finally:
            self._release()


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        factory = type("_EngineConnection", (_SerializedWriters,), {"write_lock": threading.Lock()})
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "factory": factory}
        # Many request threads each hold a connection: keep them pooled rather than reconnecting (and re-running the PRAGMAs).
        engine = create_engine(url, connect_args=connect_args, pool_size=20, max_overflow=40)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=pool_size, connect_args={"connect_timeout": 5})
    raise ValueError(f"unsupported database backend: {parsed.get_backend_name()}")


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    if not conn.get_execution_options().get(SQLITE_IMMEDIATE, False):
        conn.exec_driver_sql("BEGIN")
        return
    raw: object = conn.connection.dbapi_connection
    if isinstance(raw, _SerializedWriters):
        raw.begin_immediate()
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: on SQLite it takes the write lock up front (``BEGIN IMMEDIATE``).

    A deferred transaction that reads and then writes fails at once with "database
    is locked" when another writer committed in between; an immediate one waits
    for the lock (busy timeout) instead. On PostgreSQL this is a plain transaction.
    """
    with engine.connect() as conn:
        conn.execution_options(**{SQLITE_IMMEDIATE: True})
        with conn.begin():
            yield conn


@contextmanager
def write_on(conn: Connection) -> Iterator[None]:
    """``write_transaction`` on a connection the caller already holds, with no transaction open."""
    conn.execution_options(**{SQLITE_IMMEDIATE: True})
    try:
        with conn.begin():
            yield
    finally:
        conn.execution_options(**{SQLITE_IMMEDIATE: False})


@contextmanager
def read_snapshot(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction that sees one state of the database throughout, however many statements it runs.

    PostgreSQL: ``REPEATABLE READ``, read only. SQLite: a deferred transaction,
    whose snapshot (WAL) is taken at its first read and kept to its end.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn


__all__ = ["SQLITE_IMMEDIATE", "make_engine", "read_snapshot", "write_on", "write_transaction"]
