"""Database engines with the vault's durability and safety settings.

SQLite (the embedded default), on every connection: WAL journal,
``synchronous=FULL`` (an acknowledged commit survives power loss),
``foreign_keys=ON``, ``secure_delete=ON`` (freed pages are zeroed, so a
shredded key does not linger in the file), a busy timeout. pysqlite's own
transaction handling is switched off and SQLAlchemy emits ``BEGIN`` itself, as
SQLAlchemy documents, so savepoints work; a transaction that will write is
opened with ``write_transaction`` (``BEGIN IMMEDIATE``).

Writers of one engine take a process-wide lock before ``BEGIN IMMEDIATE``,
then a ``flock`` on ``<database>-writer.lock`` shared by the engines of every
process, and release both when the transaction ends (the DBAPI connection's
``commit`` or ``rollback``). SQLite's busy handler waits by sleeping in
growing steps (up to 100 ms) however soon the lock frees, so a process whose
writers keep the lock busy starved the others; threads queued on a Python
lock are woken at once, and a process polling the lock file within half a
millisecond. The lock file only orders the vault's writers; SQLite's own
lock still guards every write, and other programs writing the database are
arbitrated by it and the busy timeout.

PostgreSQL through psycopg 3: ``pool_pre_ping`` and a connect timeout, so a
database that went away fails fast instead of hanging.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

SQLITE_BUSY_TIMEOUT_MS = 5000
# Execution option: begin this connection's transactions with BEGIN IMMEDIATE (keys/ uses the same name).
SQLITE_IMMEDIATE = "sqlite_immediate"


class _WriterFile:
    """The lock file beside a SQLite database (``<file>-writer.lock``) that the vault's writers of every process queue on.

    ``flock`` is tried without blocking and then polled in short, growing
    pauses (50 µs up to 0.5 ms) until the busy timeout: a waiter in another
    process gets the lock within half a millisecond of its release, where
    SQLite's own busy handler sleeps 1, 2, 5, 10 … up to 100 ms. Writers that
    do not use this engine (the sqlite3 shell, another program) are still
    arbitrated by SQLite's lock. A process that dies releases it with its file.
    """

    def __init__(self, database: str) -> None:
        self._fd = os.open(database + "-writer.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        weakref.finalize(self, os.close, self._fd)  # closed once no engine or connection refers to it

    def acquire(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        pause = 0.00005
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 0.0005)
            else:
                return True

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


class _SerializedWriters(sqlite3.Connection):
    """A pysqlite connection whose write transactions queue on its engine's lock (set on a per-engine subclass), then on the writer file."""

    write_lock: threading.Lock
    writer_file: _WriterFile | None
    _holding = False
    _holding_file = False

    def begin_immediate(self) -> None:
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        if not self.write_lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise sqlite3.OperationalError("database is locked")
        self._holding = True
        try:
            if self.writer_file is not None:
                if not self.writer_file.acquire(max(0.0, deadline - time.monotonic())):
                    raise sqlite3.OperationalError("database is locked")
                self._holding_file = True
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if self._holding_file:
            self._holding_file = False
            if self.writer_file is not None:
                self.writer_file.release()
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
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or "mode=memory" in str(parsed.query)
        writer_file = None if in_memory else _WriterFile(database)
        factory = type("_EngineConnection", (_SerializedWriters,), {"write_lock": threading.Lock(), "writer_file": writer_file})
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
        try:
            raw.begin_immediate()
        except sqlite3.Error as exc:  # raised inside an event hook, so SQLAlchemy would not wrap it: callers expect its errors
            raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
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
