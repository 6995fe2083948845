"""Reads straight on the driver, for the per-request checks: ``SqliteReader`` (embedded database), ``DriverRow`` (PostgreSQL).

A SELECT through SQLAlchemy's pool costs a checkout, a ``BEGIN``, a reset and
a check-in around the statement itself — more than the statement. A question
every request asks (is this token revoked?) goes instead to one read-only
connection per thread in autocommit mode: on a WAL database each SELECT sees
the last committed state when it starts, which is all such a check needs,
and it takes no lock a writer waits for. Being local and short, such a read
may run on the event loop; so its busy timeout is short (a WAL reader waits
only in rare cases, such as recovery after a crash), and a failure is
SQLAlchemy's ``OperationalError``, which the edge answers with 503.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, Select
from sqlalchemy.exc import DBAPIError, OperationalError

# Seconds a read waits for SQLite's locks before it fails (it may be running on the event loop).
BUSY_TIMEOUT_S = 0.25


class SqliteReader:
    """One read-only autocommit ``sqlite3`` connection per thread on one database file."""

    def __init__(self, path: str, *, timeout: float = BUSY_TIMEOUT_S) -> None:
        self._path = path
        self._timeout = timeout
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @classmethod
    def of(cls, engine: Engine) -> SqliteReader | None:
        """A reader on the engine's database file, or None when it is not an SQLite file (PostgreSQL, in-memory)."""
        database = engine.url.database
        if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
            return None
        return cls(str(database))

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=self._timeout, check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    def row(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        """The one row ``sql`` returns."""
        found = self._execute(sql, params).fetchone()
        if found is None:
            raise LookupError("the statement returned no row")
        return tuple(found)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._execute(sql, params)]

    def _execute(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        try:
            return self._connection().execute(sql, params)
        except sqlite3.Error as exc:
            raise OperationalError(sql, params, exc) from exc

    def close(self) -> None:
        """Close every thread's connection (when the services close; a thread's next read opens a new one)."""
        with self._lock:
            opened, self._opened = self._opened, []
        self._local = threading.local()
        for conn in opened:
            conn.close()


class DriverRow:
    """A SQLAlchemy ``SELECT`` whose first row is read on the connection's DBAPI cursor on PostgreSQL.

    Per request the vault asks a few one-row questions (is the token revoked,
    the policy version, is the member restricted, the member's row). On
    PostgreSQL SQLAlchemy's execution context and result — psycopg builds a
    ``Column`` object per result column for every execution — cost two to
    three times the statement's round trip. So there the statement, compiled
    once, goes to a psycopg cursor on the same connection (inside whatever
    transaction it has; none in autocommit), and each value of its row passes
    its column type's result processor as SQLAlchemy would apply it (an
    aware UTC datetime stays one). Parameters must need no bind processing
    (strings, numbers; an ``IN`` list must be the statement's own, not a
    parameter's value). Elsewhere (SQLite) it is an ordinary
    ``Connection.execute``. A driver error is raised as SQLAlchemy's, as
    ``execute`` would, and a dead connection is invalidated.
    """

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: tuple[str, dict[str, Any], list[Callable[[Any], Any] | None]] | None = None

    def first(self, conn: Connection, params: dict[str, Any]) -> tuple[Any, ...] | None:
        if conn.dialect.name != "postgresql":
            row = conn.execute(self.statement, params).first()
            return None if row is None else tuple(row)
        if self._compiled is None:
            dialect = conn.dialect
            compiled = self.statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
            processors: list[Callable[[Any], Any] | None] = [
                c.type.dialect_impl(dialect).result_processor(dialect, None) for c in self.statement.selected_columns
            ]
            self._compiled = (compiled.string, dict(compiled.params), processors)
        sql, defaults, processing = self._compiled
        driver: Any = conn.connection.driver_connection
        error: Any = conn.dialect.loaded_dbapi.Error  # the driver's base exception class
        try:
            with driver.cursor() as cursor:
                cursor.execute(sql, {**defaults, **params})
                found = cursor.fetchone()
        except error as exc:
            gone = conn.dialect.is_disconnect(exc, driver, None)
            if gone:
                conn.invalidate(exc)
            raise DBAPIError.instance(sql, None, exc, error, connection_invalidated=gone, dialect=conn.dialect) from exc
        if found is None:
            return None
        return tuple(value if process is None else process(value) for process, value in zip(processing, found, strict=True))


__all__ = ["BUSY_TIMEOUT_S", "DriverRow", "SqliteReader"]
