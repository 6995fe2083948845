"""Database engines with the vault's durability and safety settings.

SQLite (the embedded default), on every connection: WAL journal,
``synchronous=FULL`` (an acknowledged commit survives power loss),
``foreign_keys=ON``, ``secure_delete=ON`` (freed pages are zeroed, so a
shredded key does not linger in the file), a busy timeout. pysqlite's own
transaction handling is switched off and SQLAlchemy emits ``BEGIN`` itself, as
SQLAlchemy documents, so savepoints work; a transaction that will write is
opened with ``write_transaction`` (``BEGIN IMMEDIATE``).

PostgreSQL through psycopg 3: ``pool_pre_ping`` and a connect timeout, so a
database that went away fails fast instead of hanging.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 5000
# Execution option: begin this connection's transactions with BEGIN IMMEDIATE (keys/ uses the same name).
SQLITE_IMMEDIATE = "sqlite_immediate"


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
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
    immediate = conn.get_execution_options().get(SQLITE_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


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


__all__ = ["SQLITE_IMMEDIATE", "make_engine", "write_transaction"]
