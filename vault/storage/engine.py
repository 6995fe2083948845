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
lock are woken at once, and a process waiting for the lock file as soon as
the kernel grants it. The lock file only orders the vault's writers; SQLite's own
lock still guards every write, and other programs writing the database are
arbitrated by it and the busy timeout.

PostgreSQL through psycopg 3: a connect timeout, so a database that went
away fails fast instead of hanging, and a ping before a pooled connection is
used again after ``PING_AFTER_IDLE_S`` idle (a dead one is replaced, the
pool retrying). ``pool_pre_ping`` would ping before every use: a round trip
and a statement's worth of work on every checkout, several a request. A
connection that died while in steady use fails its next statement instead;
SQLAlchemy then invalidates the pool's connections, and the request is
answered 503.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection, Dialect
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.pool import ConnectionPoolEntry

SQLITE_BUSY_TIMEOUT_MS = 5000
# PostgreSQL: a pooled connection unused this long is pinged at its next checkout (a busy one is not: see ``make_engine``).
PING_AFTER_IDLE_S = 5.0
_IDLE_SINCE = "member_vault_idle_since"
# Execution option: begin this connection's transactions with BEGIN IMMEDIATE (keys/ uses the same name).
SQLITE_IMMEDIATE = "sqlite_immediate"


class _Grant:
    """One writer's request for the lock file, settled by the waiter thread (granted) or given up by the writer (abandoned)."""

    __slots__ = ("abandoned", "granted", "lock", "ready")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.granted = False
        self.abandoned = False


def _wait_for_lock_file(fd: int, requests: queue.SimpleQueue[_Grant | None]) -> None:
    """The waiter thread: takes the lock file for each request in turn, blocking in ``flock`` (no polling, no GIL held)."""
    while (grant := requests.get()) is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # the file was closed under it (the engine is gone): nobody can still be waiting
            return
        with grant.lock:
            if grant.abandoned:
                fcntl.flock(fd, fcntl.LOCK_UN)
                continue
            grant.granted = True
        grant.ready.set()


def _close_lock_file(fd: int, requests: queue.SimpleQueue[_Grant | None]) -> None:
    requests.put(None)
    os.close(fd)


class _WriterFile:
    """The lock file beside a SQLite database (``<file>-writer.lock``) that the vault's writers of every process queue on.

    A writer first tries ``flock`` without blocking; if another process holds
    it, the engine's waiter thread blocks in ``flock`` on the writer's behalf
    and hands it over the moment the kernel grants it, while the writer waits
    up to the busy timeout (then it gives up with "database is locked", as
    SQLite would, and a lock granted later is let go at once). SQLite's own
    busy handler instead sleeps 1, 2, 5, 10 … up to 100 ms however soon the
    lock frees. A process that dies releases the lock with its file.
    """

    def __init__(self, database: str) -> None:
        self._fd = os.open(database + "-writer.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._requests: queue.SimpleQueue[_Grant | None] = queue.SimpleQueue()
        self._waiter: threading.Thread | None = None
        self._start = threading.Lock()
        # The waiter thread holds the descriptor and the queue, never this object: once no engine or connection refers to
        # it, the thread is told to stop and the descriptor is closed.
        weakref.finalize(self, _close_lock_file, self._fd, self._requests)

    def acquire(self, timeout: float) -> bool:
        with contextlib.suppress(BlockingIOError):
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        grant = _Grant()
        self._ensure_waiter()
        self._requests.put(grant)
        if grant.ready.wait(timeout):
            return True
        with grant.lock:
            if grant.granted:  # granted just as the wait ended
                return True
            grant.abandoned = True
        return False

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _ensure_waiter(self) -> None:
        with self._start:
            if self._waiter is None:
                self._waiter = threading.Thread(target=_wait_for_lock_file, args=(self._fd, self._requests), name="sqlite-writer-lock", daemon=True)
                self._waiter.start()


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


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
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
        # Connections beyond ``pool_size`` are closed when returned: a request that needs one pays a new server
        # process and its authentication (more than the request's own statements). The default keeps the API
        # process's steady users (read pool, audit writer and pump, a few routes) pooled; at most 15 as before.
        engine = create_engine(url, pool_size=pool_size, max_overflow=max(0, 15 - pool_size), connect_args={"connect_timeout": 5})
        event.listen(engine, "checkin", _mark_idle)
        event.listen(engine, "checkout", functools.partial(_ping_if_idle, engine.dialect))
        return engine
    raise ValueError(f"unsupported database backend: {parsed.get_backend_name()}")


def _mark_idle(_dbapi_connection: object, record: ConnectionPoolEntry) -> None:
    record.info[_IDLE_SINCE] = time.monotonic()


def _ping_if_idle(dialect: Dialect, dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: object) -> None:
    """A connection idle in the pool for ``PING_AFTER_IDLE_S`` or more is pinged before use; a dead one is replaced (the pool retries)."""
    since = record.info.get(_IDLE_SINCE)
    if since is not None and time.monotonic() - since < PING_AFTER_IDLE_S:
        return
    try:
        dialect.do_ping(dbapi_connection)
    except Exception as exc:  # whatever the driver raised: the connection is not to be used
        raise DisconnectionError("a pooled connection did not answer its ping") from exc


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
    raw: object = conn.connection.dbapi_connection
    if not conn.get_execution_options().get(SQLITE_IMMEDIATE, False):
        # Straight on the driver: through ``exec_driver_sql`` this BEGIN cost three times the read it opens.
        if not isinstance(raw, sqlite3.Connection):
            conn.exec_driver_sql("BEGIN")
            return
        try:
            raw.execute("BEGIN")
        except sqlite3.Error as exc:  # raised inside an event hook, so SQLAlchemy would not wrap it: callers expect its errors
            raise OperationalError("BEGIN", None, exc) from exc
        return
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
