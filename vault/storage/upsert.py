"""``INSERT … ON CONFLICT DO NOTHING`` for the data database's two dialects."""

from __future__ import annotations

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_ignore(conn: Connection, table: Table) -> sqlite.Insert | postgresql.Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


__all__ = ["insert_ignore"]
