"""Reads on an embedded (SQLite) database straight on the driver, for the per-request checks.

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
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

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


__all__ = ["BUSY_TIMEOUT_S", "SqliteReader"]
