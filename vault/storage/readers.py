"""Reads on an embedded (SQLite) database straight on the driver, for the per-request checks.

A SELECT through SQLAlchemy's pool costs a checkout, a ``BEGIN``, a reset and
a check-in around the statement itself — more than the statement. The few
questions every request asks (is this token revoked? which policy version is
active?) go instead to one read-only connection per thread in autocommit
mode: on a WAL database each SELECT sees the last committed state when it
starts, which is all those checks need, and it takes no lock a writer waits
for. Being local and short, such a read may run on the event loop.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from sqlalchemy import Engine


class SqliteReader:
    """One read-only autocommit ``sqlite3`` connection per thread on one database file."""

    def __init__(self, path: str, *, timeout: float = 30.0) -> None:
        self._path = path
        self._timeout = timeout
        self._local = threading.local()

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
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=self._timeout, check_same_thread=True)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
        return conn

    def row(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        """The one row ``sql`` returns."""
        found = self._connection().execute(sql, params).fetchone()
        if found is None:
            raise LookupError("the statement returned no row")
        return tuple(found)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._connection().execute(sql, params)]


__all__ = ["SqliteReader"]
